package io.fabricckpt.cli;

import io.fabricckpt.dist.LocalLauncher;
import java.io.IOException;

/**
 * {@code fabric-ckpt launch -n N [--timeout S] [--grace S] [--cp CLASSPATH] CLASS [ARGS...]}: runs
 * CLASS in N local JVMs as the ranks of one process group (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT set as torchrun sets them), output prefixed by rank; see {@link LocalLauncher}.
 */
final class LaunchCommand {
    private LaunchCommand() {}

    /** {@code args} are what follows "launch"; returns the exit code. */
    static int run(String[] args) {
        try {
            return LocalLauncher.run(args, System.out, System.err);
        } catch (IOException e) {
            System.err.println("fabric-ckpt launch: " + e.getMessage());
            return ExitCodes.IO;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return 130;
        }
    }
}
