package io.fabricckpt.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.Fabric;
import io.fabricckpt.Net;
import io.fabricckpt.S3Server;
import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.CheckpointException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import software.amazon.awssdk.core.sync.RequestBody;

/**
 * A sharded directory in object storage ({@code s3://bucket/prefix/}) loaded on 2 JVMs and on 1, against
 * the real S3 server: the same state as the local directory gives, each rank fetching only the byte
 * ranges of the chunks overlapping its shards.
 */
class S3ShardedTest {
    @TempDir
    Path dir;

    private final S3Server server = S3Server.get();

    private static LocalLauncher launcher(int n) {
        Map<String, String> env = new HashMap<>(S3Server.environment());
        env.put("FABRICCKPT_DIST_TIMEOUT", "60");
        return new LocalLauncher(n).timeout(Duration.ofSeconds(120)).failureGrace(Duration.ofSeconds(30))
                .environment(env);
    }

    private static Optional<String> line(LocalLauncher.Result r, int rank, String prefix) {
        return r.output(rank).stream().filter(l -> l.startsWith(prefix)).map(l -> l.substring(prefix.length()))
                .findFirst();
    }

    private static LocalLauncher.Result launch(int n, String... args) throws Exception {
        LocalLauncher.Result r = launcher(n).launch(FsdpWorker.class.getName(), args);
        assertTrue(r.succeeded(), r.describe());
        if (args[0].equals("load")) {
            for (int rank = 0; rank < n; rank++) {
                assertEquals(Optional.of("5"), line(r, rank, "step="), "rank " + rank + ": " + r.output(rank));
            }
        }
        return r;
    }

    @Test
    void aShardedDirectoryInS3LoadsOnTwoJvmsAndOneFetchingOnlyItsChunks() throws Exception {
        Path local = dir.resolve("sharded");
        launch(2, "save-sharded", local.toString());
        String bucket = server.newBucket("sharded");
        long shardBytes = 0;
        long wholeBytes = 0; // .metadata and meta.pt, fetched whole by every reader
        try (Stream<Path> files = Files.list(local)) {
            for (Path file : files.toList()) {
                String key = "run/step-5/" + file.getFileName();
                server.client().putObject(b -> b.bucket(bucket).key(key), RequestBody.fromFile(file));
                if (file.getFileName().toString().endsWith(".distcp")) {
                    shardBytes += Files.size(file);
                } else {
                    wholeBytes += Files.size(file);
                }
            }
        }
        String url = "s3://" + bucket + "/run/step-5/";

        // One file name (it names the archive folder inside), three folders.
        Path fromLocal = Files.createDirectories(dir.resolve("from-local")).resolve("loaded.ckpt");
        Path fromS3By2 = Files.createDirectories(dir.resolve("from-s3-by-2")).resolve("loaded.ckpt");
        Path fromS3By1 = Files.createDirectories(dir.resolve("from-s3-by-1")).resolve("loaded.ckpt");
        launch(2, "load", local.toString(), fromLocal.toString());
        LocalLauncher.Result two = launch(2, "load", url, fromS3By2.toString());
        launch(1, "load", url, fromS3By1.toString());
        // Rows are split between the ranks: each fetches (about) its half of the shard files, not all.
        for (int rank = 0; rank < 2; rank++) {
            long fetched = Long.parseLong(line(two, rank, "s3-bytes=").orElseThrow()) - wholeBytes;
            System.out.println("rank " + rank + " fetched " + fetched + " of " + shardBytes + " shard bytes");
            assertTrue(fetched > 0 && fetched < shardBytes * 3 / 4, "rank " + rank + " fetched " + fetched + " of "
                    + shardBytes + " shard bytes");
        }
        // The FULL files each load wrote are one and the same.
        assertArrayEquals(Files.readAllBytes(fromLocal), Files.readAllBytes(fromS3By2));
        assertArrayEquals(Files.readAllBytes(fromLocal), Files.readAllBytes(fromS3By1));

        // One plain process, and the consolidated read (what convert writes): as from the local directory.
        assertEquals(TorchFiles.read(local).toString(), TorchFiles.read(url).toString());
        String verified = TorchFiles.verify(url);
        assertTrue(verified.startsWith("s3://" + bucket + "/run/step-5: OK"), verified);
        Net fromS3 = new Net(4, 8, 2);
        Net fromDisk = new Net(4, 8, 2);
        Map<String, Object> remainder = new Fabric().load(url, new HashMap<>(Map.of("model", fromS3)));
        Map<String, Object> localRemainder = new Fabric().load(local, new HashMap<>(Map.of("model", fromDisk)));
        assertEquals(localRemainder.keySet(), remainder.keySet());
        assertTrue(fromS3.fc1.weight().equal(fromDisk.fc1.weight()));
    }

    @Test
    void aShardedSaveToObjectStorageIsRefusedClearly() throws Exception {
        Net model = new Net(4, 8, 2);
        Adam optimizer = new Adam(model.parameters(), new AdamOptions(1e-3));
        int port;
        try (java.net.ServerSocket socket = new java.net.ServerSocket(0)) {
            port = socket.getLocalPort();
        }
        try (ProcessGroup group = ProcessGroup.connect("127.0.0.1", port, 0, 1, Duration.ofSeconds(30))) {
            ShardedModule sharded = ShardedModule.shardRows(model, 0, 1, optimizer);
            Fabric fabric = new Fabric(new Fsdp(group, Fsdp.StateDictType.SHARDED));
            CheckpointException e = org.junit.jupiter.api.Assertions.assertThrows(CheckpointException.class,
                    () -> fabric.save("s3://bucket/run/", Map.of("model", sharded, "optimizer", optimizer)));
            assertTrue(e.getMessage().contains("s3://bucket/run") && e.getMessage().contains("not supported"),
                    e.getMessage());
        }
    }
}
