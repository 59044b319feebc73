package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointException;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import picocli.CommandLine.Command;
import picocli.CommandLine;

/**
 * {@code fabric-ckpt} ({@code bin/fabric-ckpt}, {@code java -jar fabric-ckpt-cli.jar}): command-line
 * tools over checkpoints. Each subcommand is a small picocli class ({@code *Cli}) that delegates to
 * the code doing the work. Exit codes: {@link ExitCodes}.
 */
@Command(name = "fabric-ckpt", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "Lightning Fabric checkpoints (torch.save files, torch.distributed.checkpoint directories) on the JVM.",
        subcommands = {DemoCli.class, InspectCli.class, VerifyCli.class, DiffCli.class, ConvertCli.class, CleanCli.class, BenchCli.class,
            BenchShardedCli.class, BenchS3Cli.class, LaunchCli.class, CommandLine.HelpCommand.class},
        footerHeading = "%nExit codes:%n",
        footer = {"  0  done (diff: equal; verify: no corruption)", "  1  the check failed (diff: they differ; verify: corrupt)",
            "  2  usage error", "  3  a file or directory could not be read or written", "  4  any other failure"})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** No subcommand: the usage, as a usage error. */
    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "a command is required");
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** The command line for {@code args}, its streams System.out and System.err as they are now. */
    static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        cl.setOut(new PrintWriter(System.out, true));
        cl.setErr(new PrintWriter(System.err, true));
        cl.setUsageHelpWidth(100);
        // launch: everything after CLASS belongs to the ranks, options included
        cl.getSubcommands().get("launch").setStopAtPositional(true);
        cl.setParameterExceptionHandler((e, args) -> {
            CommandLine failed = e.getCommandLine();
            PrintWriter err = failed.getErr();
            err.println(prefix(failed) + e.getMessage());
            failed.usage(err);
            return ExitCodes.USAGE;
        });
        cl.setExecutionExceptionHandler((e, failed, parseResult) -> {
            PrintWriter err = failed.getErr();
            int code;
            String message;
            if (e instanceof CliException c) {
                code = c.exitCode();
                message = c.getMessage();
            } else if (e instanceof CheckpointException || e instanceof Outlines.FormatException || e instanceof IOException
                    || e instanceof UncheckedIOException) {
                code = ExitCodes.IO;
                message = e.getMessage();
            } else if (e instanceof IllegalArgumentException) {
                code = ExitCodes.USAGE;
                message = e.getMessage();
            } else {
                code = ExitCodes.FAILED;
                message = "failed: " + (e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName());
            }
            err.println(prefix(failed) + message);
            if (System.getenv("FABRICCKPT_DEBUG") != null) {
                e.printStackTrace(err);
            }
            return code;
        });
        return cl;
    }

    static int run(String... args) {
        return commandLine().execute(args);
    }

    private static String prefix(CommandLine cl) {
        return cl.getParent() == null ? "fabric-ckpt: " : "fabric-ckpt " + cl.getCommandName() + ": ";
    }
}
