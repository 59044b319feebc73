package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "clean", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Remove what saves killed midway left beside a checkpoint.",
            "Removes .NAME.tmp-* files and directories whose writer is gone (older than 5 s, no lock",
            "held) and puts back a sharded checkpoint that an interrupted replacement set aside as",
            ".NAME.old-*. Every save does this for its own target; this does it on demand.",
            "For s3://: aborts the multipart uploads of the object (or of the objects under the",
            "prefix) begun more than --older-than ago and never completed."})
final class CleanCli implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = {"the checkpoint file or sharded directory (it need not exist),",
        "local or s3://bucket/key (s3://bucket/prefix/)"})
    String location;

    @Option(names = "--older-than", paramLabel = "AGE", defaultValue = "1h",
            description = {"s3:// only: abort uploads begun at least this long ago, e.g. 30s, 10m, 1h, 2d;",
                "0: every pending one (default: ${DEFAULT-VALUE}; a save in progress has an upload too)"})
    String olderThan;

    @Override
    public Integer call() {
        if (ObjectLocations.isRemote(location)) {
            return cleanObjects(CheckpointLocation.parse(location), age(olderThan));
        }
        Path path = Path.of(location);
        List<Path> cleaned = Outlines.clean(path);
        if (cleaned.isEmpty()) {
            System.out.println("nothing to clean beside " + path);
        }
        for (Path p : cleaned) {
            System.out.println("cleaned " + p);
        }
        return ExitCodes.OK;
    }

    private static int cleanObjects(CheckpointLocation location, Duration age) {
        S3Objects objects = S3Objects.shared();
        Instant before = Instant.now().minus(age);
        int aborted = 0;
        for (S3Objects.PendingUpload upload : objects.pendingUploads(location)) {
            if (age.isZero() || !upload.initiated().isAfter(before)) { // 0: every one, whatever the store's clock says
                objects.abort(upload);
                System.out.println("aborted the upload of " + upload.object() + " begun " + upload.initiated());
                aborted++;
            }
        }
        if (aborted == 0) {
            System.out.println("nothing to clean at " + location + " (no upload begun more than " + age.toSeconds()
                    + " s ago)");
        }
        return ExitCodes.OK;
    }

    /** "30s", "10m", "1h", "2d" (a bare number: seconds). */
    static Duration age(String text) {
        String t = text.trim().toLowerCase(java.util.Locale.ROOT);
        long unit = switch (t.isEmpty() ? ' ' : t.charAt(t.length() - 1)) {
            case 's' -> 1;
            case 'm' -> 60;
            case 'h' -> 3600;
            case 'd' -> 86400;
            default -> 0;
        };
        try {
            long n = Long.parseLong(unit == 0 ? t : t.substring(0, t.length() - 1));
            if (n < 0) {
                throw new NumberFormatException();
            }
            return Duration.ofSeconds(Math.multiplyExact(n, unit == 0 ? 1 : unit));
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("--older-than: not an age: '" + text + "' (e.g. 30s, 10m, 1h, 2d)");
        }
    }
}
