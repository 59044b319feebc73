package io.fabricckpt.cli;

import io.fabricckpt.CheckpointException;
import io.fabricckpt.TorchFiles;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** {@code bin/fabric-ckpt}: command-line tools over checkpoints. */
public final class Main {
    private static final String USAGE = """
            usage: fabric-ckpt COMMAND [ARGS]
              demo [DIR]            train a small model in Java, checkpointing every few steps; run it
                                    again to resume from the latest checkpoint
              inspect PATH [--json] the tree of keys with dtypes, shapes and sizes
              verify PATH           check every record's CRC-32, the pickle, storages and tensor views
              diff A B              keys, shapes and the largest difference of each tensor
              convert SRC DST       read any checkpoint this library reads, write it as a torch.save file
                                    (a sharded directory is consolidated, as Lightning's consolidate_checkpoint)
              bench [--size 256M,1G] [--4g] [--reps N] [--dir DIR] [--no-python]
                                    save/load throughput against Python Lightning, torch and dd/cat
              bench-sharded [--size 256M] [--ranks 2] [--reps N] [--dir DIR] [--no-python]
                                    sharded and full saves across JVM ranks against Lightning's FSDP2
              launch -n N [--timeout S] CLASS [ARGS]
                                    start N local JVMs as ranks of one process group (torchrun's variables)
            """;

    private Main() {}

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String[] args) {
        if (args.length == 0 || args[0].equals("-h") || args[0].equals("--help")) {
            System.out.print(USAGE);
            return args.length == 0 ? 2 : 0;
        }
        List<String> rest = new ArrayList<>(Arrays.asList(args).subList(1, args.length));
        try {
            switch (args[0]) {
                case "demo" -> Demo.run(rest.isEmpty() ? Path.of("demo-checkpoints") : Path.of(rest.get(0)));
                case "inspect" -> {
                    boolean json = rest.remove("--json");
                    requireArgs(rest, 1, "inspect PATH [--json]");
                    Object checkpoint = TorchFiles.read(Path.of(rest.get(0)));
                    if (json) {
                        System.out.println(Inspect.json(checkpoint));
                    } else {
                        Inspect.print(checkpoint, System.out);
                    }
                }
                case "verify" -> {
                    requireArgs(rest, 1, "verify PATH");
                    System.out.println(TorchFiles.verify(Path.of(rest.get(0))));
                }
                case "diff" -> {
                    requireArgs(rest, 2, "diff A B");
                    boolean same = Diff.run(TorchFiles.read(Path.of(rest.get(0))), TorchFiles.read(Path.of(rest.get(1))),
                            System.out);
                    return same ? 0 : 1;
                }
                case "bench" -> {
                    return BenchCommand.run(rest.toArray(String[]::new));
                }
                case "launch" -> {
                    return LaunchCommand.run(rest.toArray(String[]::new));
                }
                case "bench-sharded" -> {
                    return ShardedBench.run(rest.toArray(String[]::new));
                }
                case "convert" -> {
                    requireArgs(rest, 2, "convert SRC DST");
                    ProgressBar bar = new ProgressBar("convert");
                    TorchFiles.convert(Path.of(rest.get(0)), Path.of(rest.get(1)), bar);
                    bar.finish();
                    System.out.println("wrote " + rest.get(1));
                }
                default -> {
                    System.err.print("unknown command '" + args[0] + "'\n" + USAGE);
                    return 2;
                }
            }
            return 0;
        } catch (CheckpointException | IllegalArgumentException e) {
            System.err.println("fabric-ckpt: " + e.getMessage());
            return 1;
        }
    }

    private static void requireArgs(List<String> args, int count, String usage) {
        if (args.size() != count) {
            throw new IllegalArgumentException("usage: fabric-ckpt " + usage);
        }
    }
}
