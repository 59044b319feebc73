package io.fabricckpt.cli;

import io.fabricckpt.CheckpointException;
import io.fabricckpt.TorchFiles;
import java.nio.file.Path;
import java.util.Arrays;

/** {@code bin/fabric-ckpt}: command-line tools over checkpoints. */
public final class Main {
    private static final String USAGE = """
            usage: fabric-ckpt COMMAND [ARGS]
              demo [DIR]          build a checkpoint in Java, save it, load it back and print it
              convert SRC DST     read any checkpoint this library reads and write it as a torch.save file
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
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        try {
            switch (args[0]) {
                case "demo" -> Demo.run(rest.length > 0 ? Path.of(rest[0]) : null);
                case "convert" -> {
                    requireArgs(rest, 2, "convert SRC DST");
                    TorchFiles.convert(Path.of(rest[0]), Path.of(rest[1]));
                    System.out.println("wrote " + rest[1]);
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

    private static void requireArgs(String[] args, int count, String usage) {
        if (args.length != count) {
            throw new IllegalArgumentException("usage: fabric-ckpt " + usage);
        }
    }
}
