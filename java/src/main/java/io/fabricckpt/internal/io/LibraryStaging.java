package io.fabricckpt.internal.io;

import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.internal.CallbackFailure;
import io.fabricckpt.internal.FabricNative;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.io.s3.StagingNatives;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * {@link StagingNatives} over the library's JNI library ({@link FabricNative}): staged {@code s3://}
 * checkpoints for its verify. Failures are the library's exceptions; a hole read's failure is
 * rethrown by the native call that made it ({@link #call}), as itself.
 */
final class LibraryStaging extends StagingNatives {
    static final LibraryStaging INSTANCE = new LibraryStaging();

    private static volatile Reader reader;

    private LibraryStaging() {}

    /** What the native {@code call} gives; its failure as the library's exception, or as the hole read's that caused it. */
    static <T> T call(Supplier<T> call) {
        return CallbackFailure.run(call, NativeErrors::translate);
    }

    @Override
    protected String outlineRangesMissing(String path, String fetched) {
        return call(() -> NativeCalls.string(FabricNative.outlineRangesMissing(NativeCalls.utf8(path),
                NativeCalls.utf8(fetched))));
    }

    @Override
    protected String shardedOutlineRangesMissing(String dir, String fetched, boolean everyItem) {
        return call(() -> NativeCalls.string(FabricNative.shardedOutlineRangesMissing(NativeCalls.utf8(dir),
                NativeCalls.utf8(fetched), everyItem)));
    }

    @Override
    protected String safetensorsIndexFiles(String path) {
        return call(() -> NativeCalls.string(FabricNative.safetensorsIndexFiles(NativeCalls.utf8(path))));
    }

    @Override
    protected void registerStagedFile(String path, String held) {
        call(() -> {
            FabricNative.registerStagedFile(NativeCalls.utf8(path), NativeCalls.utf8(held), reader());
            return null;
        });
    }

    @Override
    protected void unregisterStagedFile(String path) {
        FabricNative.unregisterStagedFile(NativeCalls.utf8(path));
    }

    @Override
    protected RuntimeException withMessage(RuntimeException failure, String message) {
        return new CorruptCheckpointException(message, failure);
    }

    @Override
    protected boolean isFormatError(RuntimeException e) {
        return e instanceof CorruptCheckpointException;
    }

    // One callback for every file: JavaCPP binds a callback class to one live instance.
    private static Reader reader() {
        if (reader == null) {
            synchronized (LibraryStaging.class) {
                if (reader == null) {
                    reader = new Reader();
                }
            }
        }
        return reader;
    }

    private static final class Reader extends FabricNative.HoleReader {
        @Override
        public int call(BytePointer path, long offset, long size, Pointer dest) {
            return readHole(path, offset, size, dest);
        }
    }
}
