package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/**
 * bin/fabric-ckpt answers --help and --version before anything is built, from bin/help/: those files
 * must be what the CLI prints. Regenerate them with -Dfabricckpt.writeHelp=true.
 */
class HelpTextTest {
    private static final Path HELP = Path.of(System.getProperty("user.dir")).resolve("../bin/help").normalize();

    private static String usage(CommandLine cl) {
        StringWriter text = new StringWriter();
        cl.usage(new PrintWriter(text, true));
        return text.toString();
    }

    private static void check(String name, String expected) throws Exception {
        Path file = HELP.resolve(name + ".txt");
        if (Boolean.getBoolean("fabricckpt.writeHelp")) {
            Files.createDirectories(HELP);
            Files.writeString(file, expected, StandardCharsets.UTF_8);
        }
        assertTrue(Files.exists(file), file + " is missing: run the tests with -Dfabricckpt.writeHelp=true");
        assertEquals(expected, Files.readString(file, StandardCharsets.UTF_8),
                file + " differs from the CLI's help: run the tests with -Dfabricckpt.writeHelp=true");
    }

    @Test
    void staticHelpFilesAreWhatTheCliPrints() throws Exception {
        CommandLine cl = Main.commandLine();
        check("fabric-ckpt", usage(cl));
        for (String command : MainTest.COMMANDS) {
            check(command, usage(cl.getSubcommands().get(command)));
        }
        check("version", String.join("\n", new VersionProvider().getVersion()) + "\n");
    }
}
