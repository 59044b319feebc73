package io.fabricckpt.internal.io;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.ProgressListener;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeFileLayout;
import io.fabricckpt.internal.NativeFullFileLayout;
import io.fabricckpt.internal.NativeObjectBytes;
import io.fabricckpt.internal.NativeProcessGroup;
import io.fabricckpt.internal.NativeShardPlan;
import io.fabricckpt.internal.NativeValue;
import io.fabricckpt.internal.io.s3.S3Objects;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.UnaryOperator;
import org.bytedeco.javacpp.BytePointer;

/**
 * torch.save and safetensors files in S3-compatible object storage ({@code s3://bucket/key}): the same
 * bytes as the local file (safetensors for a {@code .safetensors} key, as for local paths). A save
 * plans the file natively ({@link NativeFileLayout}) and uploads it as a multipart upload whose parts
 * are filled straight from tensor memory, several at once (extra memory: the parts in flight); the
 * object appears only when the upload completes. A load fetches the object with parallel ranged GETs
 * into one native buffer that the loaded tensors then view (no further copy), and reads it as what its
 * first bytes say it is, whatever its name, as for local files. A Hugging Face index key is a sharded
 * checkpoint of objects ({@link IndexObjects}).
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
        if (IndexObjects.isIndex(location)) {
            IndexObjects.write(objects(), location, checkpoint, options, listener);
            return;
        }
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
     * Collective, as {@link TorchSaveFileIO#writeGathered}, to an object: global rank 0 plans the file
     * with the whole tensors deferred ({@link NativeFullFileLayout}) and uploads it as a multipart upload
     * while the shards arrive, on a thread of its own: a part is filled as soon as the tensors it holds
     * are assembled, and a whole tensor is let go of once all its bytes are in parts, so rank 0 holds
     * the tensors being sent (two in the usual case) and the parts in flight, never the file. Every rank
     * learns the outcome; the object appears only when the upload completes.
     */
    public void writeGathered(CheckpointLocation location, NativeValue checkpoint, NativeShardPlan plan,
            NativeProcessGroup group, WriteOptions options) {
        boolean rankZero = group == null || group.rank() == 0;
        try (NativeFullFileLayout layout = fullLayout(location, checkpoint, plan, group, options)) {
            RuntimeException upload = null;
            if (rankZero) {
                AtomicReference<RuntimeException> gathered = new AtomicReference<>();
                Thread gatherer = new Thread(() -> {
                    try {
                        gather(layout, location);
                    } catch (RuntimeException e) {
                        gathered.set(e);
                    }
                }, "fabric-ckpt-full-gather");
                gatherer.start();
                if (layout.planned()) {
                    try {
                        uploadGathered(location, layout);
                    } catch (RuntimeException e) {
                        upload = e;
                        layout.abandon(NativeCalls.utf8(location + ": the upload failed: " + e.getMessage()));
                    }
                }
                joinUninterruptibly(gatherer);
                if (gathered.get() != null) { // every rank fails with the gather (it shared its outcome)
                    RuntimeException cause = upload != null ? upload : gathered.get();
                    if (cause != gathered.get()) {
                        cause.addSuppressed(gathered.get());
                    }
                    throw cause;
                }
            } else {
                gather(layout, location);
            }
            RankZeroOutcome.share(group, location.toString(), upload, null, "full save: upload",
                    "could not upload the checkpoint");
        }
    }

    private static NativeFullFileLayout fullLayout(CheckpointLocation location, NativeValue checkpoint,
            NativeShardPlan plan, NativeProcessGroup group, WriteOptions options) {
        try {
            return new NativeFullFileLayout(checkpoint, plan, group, NativeCalls.utf8(options.archiveName()),
                    options.unsafeGlobalsAllowed(), NativeCalls.utf8(location.toString()));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location + ": full save failed");
        }
    }

    private static void gather(NativeFullFileLayout layout, CheckpointLocation location) {
        try {
            layout.gather();
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, location + ": full save failed");
        }
    }

    private static void uploadGathered(CheckpointLocation location, NativeFullFileLayout layout) {
        objects().upload(location, layout.size(), (offset, dest) -> {
            int length = dest.remaining();
            try (BytePointer memory = new BytePointer(dest)) {
                layout.fill(offset, memory, length);
            } catch (RuntimeException e) {
                throw NativeErrors.translate(e, location + ": bytes " + offset + "+" + length);
            }
        });
    }

    private static void joinUninterruptibly(Thread thread) {
        boolean interrupted = false;
        while (true) {
            try {
                thread.join();
                break;
            } catch (InterruptedException e) {
                interrupted = true; // the gather is collective: it must end before the save returns
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /** The file {@code location} gets: safetensors for a {@code .safetensors} name, else torch.save. */
    private static NativeFileLayout plan(CheckpointLocation location, NativeValue checkpoint, WriteOptions options) {
        try {
            return new NativeFileLayout(checkpoint, SafetensorsFileIO.isSafetensorsName(location),
                    NativeCalls.utf8(options.archiveName()), options.unsafeGlobalsAllowed(),
                    NativeCalls.utf8(location.toString()));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e);
        }
    }

    /** The whole object, fetched with parallel ranged GETs into native memory. */
    static NativeObjectBytes download(CheckpointLocation location, ProgressListener listener) {
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
        if (IndexObjects.isIndex(location)) {
            try (CheckpointReader reader = IndexObjects.open(objects(), location, listener)) {
                return reader.readAll();
            }
        }
        try (NativeObjectBytes bytes = download(location, listener)) {
            return parse(bytes, options);
        }
    }

    @Override
    public CheckpointReader open(CheckpointLocation location, ReadOptions options, ProgressListener listener) {
        if (isShardedDirectory(location)) {
            return ShardedObjectReader.open(location, options, listener);
        }
        if (IndexObjects.isIndex(location)) {
            return IndexObjects.open(objects(), location, listener);
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

    /**
     * verify of an object, a sharded prefix or a Hugging Face index, as of the local file: staged with its
     * structure only ({@link StagedObject#forReading}: its directory, headers and small records), the
     * bytes verify checks read from the store into memory as it reads them, so neither memory nor disk
     * holds the checkpoint. The summary and errors name the URL.
     */
    @Override
    public String verify(CheckpointLocation location) {
        return staged(location, FabricNative::verifyTorchFile, true);
    }

    /**
     * The unsafe globals ({@code FabricNative.unsafeGlobals}, one a line) of an object, a sharded prefix or
     * a Hugging Face index, as of the local file: staged as for {@link #verify}, so only its pickles and
     * structure are fetched (kilobytes of a large checkpoint), never its tensors.
     */
    public String unsafeGlobals(CheckpointLocation location) {
        return staged(location, FabricNative::unsafeGlobals, false);
    }

    /**
     * What the native {@code check} of the staged checkpoint's local path gives, and its errors, naming the
     * URL instead ({@code leading}: the URL put first, as a summary of a file names the file).
     */
    private static String staged(CheckpointLocation location, UnaryOperator<BytePointer> check, boolean leading) {
        try (StagedObject staged = StagedObject.forReading(location.toString(), LibraryStaging.INSTANCE)) {
            try {
                return staged.naming(LibraryStaging.call(() -> NativeCalls.string(check.apply(
                        NativeCalls.path(staged.path())))), leading);
            } catch (CorruptCheckpointException e) {
                throw new CorruptCheckpointException(staged.naming(e.getMessage()), e);
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
            throw new CorruptCheckpointException(location + ": not a torch.save file (no zip local"
                    + " header at its start)", null);
        }
        int nameLength = head.getShort(26) & 0xffff;
        if (30 + nameLength > head.remaining()) {
            throw new CorruptCheckpointException(location + ": its first zip entry's name runs past"
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
