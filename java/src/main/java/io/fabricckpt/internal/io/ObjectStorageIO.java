package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeFileLayout;
import io.fabricckpt.internal.NativeObjectBytes;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.BytePointer;

/**
 * torch.save and safetensors files in S3-compatible object storage ({@code s3://bucket/key}): the same
 * bytes as the local file (safetensors for a {@code .safetensors} key, as for local paths). A save
 * plans the file natively ({@link NativeFileLayout}) and uploads it as a multipart upload whose parts
 * are filled straight from tensor memory, several at once (extra memory: the parts in flight); the
 * object appears only when the upload completes. A load fetches the object with parallel ranged GETs
 * into one native buffer that the loaded tensors then view (no further copy), and reads it as what its
 * first bytes say it is, whatever its name, as for local files.
 */
public final class ObjectStorageIO implements FileCheckpointIO {
    /** The object that marks a prefix as a torch.distributed.checkpoint directory, as on disk. */
    static final String DCP_METADATA = ".metadata";

    ObjectStorageIO() {}

    private static S3Objects objects() {
        return S3Objects.shared();
    }

    @Override
    public void write(CheckpointLocation location, NativeValue checkpoint, WriteOptions options, int threads,
            ProgressListener listener) {
        try (NativeFileLayout layout = plan(location, checkpoint, options)) {
            long total = layout.size();
            AtomicLong done = new AtomicLong();
            objects().upload(location, total, (offset, dest) -> {
                int length = dest.remaining();
                try (BytePointer memory = new BytePointer(dest)) {
                    layout.fill(offset, memory, length);
                } catch (RuntimeException e) {
                    throw NativeErrors.translate(e, location + ": bytes " + offset + "+" + length);
                }
                if (listener != null) {
                    listener.onProgress(done.addAndGet(length), total);
                }
            });
        }
    }

    /**
     * Collective, as {@link TorchSaveFileIO#writeGathered}, to an object: the whole tensors are assembled
     * one at a time from every rank's shards as the file is written, so the file cannot be planned for
     * uploading in parts before its bytes exist. Global rank 0 therefore writes it to a temporary local
     * file ({@code java.io.tmpdir}, which needs room for it; not synced), uploads that as a multipart
     * upload read part by part from the file, and deletes it; every rank learns the outcome. The object
     * appears only when the upload completes.
     */
    public void writeGathered(CheckpointLocation location, NativeValue checkpoint, NativeShardPlan plan,
            NativeProcessGroup group, WriteOptions options) {
        boolean rankZero = group == null || group.rank() == 0;
        Path spool = rankZero ? spoolFile(location) : null;
        try {
            try {
                // only rank 0 writes; the others' path names the checkpoint in their errors
                FabricNative.saveFull(NativeCalls.utf8(rankZero ? spool.toString() : location.toString()), checkpoint,
                        plan, group, NativeCalls.utf8(options.archiveName()), false, options.unsafeGlobalsAllowed());
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, location + ": full save failed");
            }
            RuntimeException upload = null;
            if (rankZero) {
                try {
                    uploadFile(location, spool);
                } catch (RuntimeException e) {
                    upload = e;
                }
            }
            RankZeroOutcome.share(group, location.toString(), upload, null, "full save: upload",
                    "could not upload the checkpoint");
        } finally {
            if (spool != null) {
                try {
                    Files.deleteIfExists(spool);
                } catch (IOException ignored) {
                    // a leftover temporary file; the save's outcome stands
                }
            }
        }
    }

    /** A fresh name in the temporary directory for the gathered file of {@code location}. */
    private static Path spoolFile(CheckpointLocation location) {
        String name = location.fileName().replaceAll("[^A-Za-z0-9._-]", "_");
        return Path.of(System.getProperty("java.io.tmpdir"))
                .resolve("fabric-ckpt-" + ProcessHandle.current().pid() + "-" + System.nanoTime() + "-" + name);
    }

    private static void uploadFile(CheckpointLocation location, Path file) {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            objects().upload(location, channel.size(), (offset, dest) -> {
                try {
                    for (long at = offset; dest.hasRemaining();) {
                        int n = channel.read(dest, at);
                        if (n < 0) {
                            throw new IOException(file + ": ends before byte " + at);
                        }
                        at += n;
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
        } catch (IOException | UncheckedIOException e) {
            throw new CheckpointException(location + ": could not read the gathered file " + file + " to upload it", e);
        }
    }

    /**
     * The file {@code location} gets: safetensors for a {@code .safetensors} name, else torch.save.
     *
     * @throws CheckpointException for a Hugging Face index name (sharded safetensors objects are not written yet)
     */
    private static NativeFileLayout plan(CheckpointLocation location, NativeValue checkpoint, WriteOptions options) {
        String name = location.fileName();
        if (name != null && name.endsWith(SafetensorsFileIO.INDEX_EXTENSION)) {
            throw new CheckpointException(location + ": Hugging Face sharded checkpoints ("
                    + SafetensorsFileIO.INDEX_EXTENSION + ") cannot be saved to object storage yet; save one "
                    + SafetensorsFileIO.EXTENSION + " object, or the index to a local path");
        }
        try {
            return new NativeFileLayout(checkpoint, SafetensorsFileIO.isSafetensorsName(location),
                    NativeCalls.utf8(options.archiveName()), options.unsafeGlobalsAllowed(),
                    NativeCalls.utf8(location.toString()));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The whole object, fetched with parallel ranged GETs into native memory. */
    private static NativeObjectBytes download(CheckpointLocation location, ProgressListener listener) {
        long size = objects().size(location);
        NativeObjectBytes bytes = new NativeObjectBytes(size, NativeCalls.utf8(location.toString()));
        try {
            AtomicLong done = new AtomicLong();
            objects().download(location, size, (offset, length) -> {
                var window = bytes.window(offset, length);
                if (listener != null) {
                    listener.onProgress(done.addAndGet(length), size);
                }
                return window;
            });
            return bytes;
        } catch (RuntimeException e) {
            bytes.close();
            throw e;
        }
    }

    /** The downloaded file's tree: a torch.save file's, or a safetensors file's tensors (name -> tensor). */
    private static NativeValue parse(NativeObjectBytes bytes, ReadOptions options) {
        try {
            return bytes.isSafetensors() ? FabricNative.loadSafetensorsBytes(bytes)
                    : FabricNative.loadTorchBytes(bytes, options.verifyCrc(), options.threads(), options.weightsOnly());
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The object's tree, downloaded whole into native memory and parsed where it lies. */
    public NativeValue read(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        try (NativeObjectBytes bytes = download(location, listener)) {
            return parse(bytes, options);
        }
    }

    @Override
    public CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        if (isShardedDirectory(location)) {
            return ShardedObjectReader.open(objects(), location, options, listener);
        }
        try (NativeObjectBytes bytes = download(location, listener)) {
            if (!bytes.isSafetensors()) {
                return new TorchSaveFileIO.TreeReader(parse(bytes, options));
            }
            NativeValue metadata;
            try {
                metadata = bytes.safetensorsMetadata();
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e);
            }
            try {
                return new FlatReader(parse(bytes, options), () -> metadata);
            } catch (RuntimeException e) {
                metadata.close();
                throw e;
            }
        }
    }

    @Override
    public String verify(CheckpointLocation location) {
        if (isShardedDirectory(location)) {
            try (ShardedObjectReader reader = ShardedObjectReader.open(objects(), location, ReadOptions.DEFAULT, null)) {
                return reader.verify();
            }
        }
        try (NativeObjectBytes bytes = download(location, null)) {
            long size = bytes.size();
            boolean safetensors = bytes.isSafetensors();
            try (NativeValue root = parse(bytes, ReadOptions.DEFAULT)) {
                return location + ": OK: " + size + (safetensors
                        ? " bytes, a safetensors file: its header checked and every tensor read"
                        : " bytes, every record's CRC-32 checked, the pickle and every tensor read");
            }
        }
    }

    /**
     * The archive folder of the torch.save file in the object (the first record's folder, from its local
     * header: the first bytes only), "" for a legacy (pickle-stream) file.
     */
    public String archiveName(CheckpointLocation location) {
        long size = objects().size(location);
        java.nio.ByteBuffer head = objects().read(location, 0, (int) Math.min(size, 30 + 0xffff))
                .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        if (head.remaining() < 30 || head.getInt(0) != 0x04034b50) {
            if (head.remaining() > 0 && (head.get(0) & 0xff) == 0x80) {
                return ""; // pickle's PROTO opcode: a legacy file
            }
            throw new io.fabricckpt.core.CorruptCheckpointException(location + ": not a torch.save file (no zip local"
                    + " header at its start)", null);
        }
        int nameLength = head.getShort(26) & 0xffff;
        if (30 + nameLength > head.remaining()) {
            throw new io.fabricckpt.core.CorruptCheckpointException(location + ": its first zip entry's name runs past"
                    + " the object's end", null);
        }
        byte[] name = new byte[nameLength];
        head.get(30, name);
        String first = new String(name, java.nio.charset.StandardCharsets.UTF_8);
        int slash = first.indexOf('/');
        return slash < 0 ? "" : first.substring(0, slash);
    }

    /** Whether {@code location} is a prefix holding a {@code .metadata} object (a sharded directory). */
    public boolean isShardedDirectory(CheckpointLocation location) {
        return objects().exists(location.resolve(DCP_METADATA));
    }
}
