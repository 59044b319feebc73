package io.fabricckpt.cli;

import static io.fabricckpt.internal.NativeCalls.string;
import static io.fabricckpt.internal.NativeCalls.utf8;

import io.fabricckpt.cli.format.FormatNative;
import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.internal.io.s3.StagingNatives;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * {@link StagingNatives} over the torch-free JNI library ({@link FormatNative}), for the commands that
 * stage {@code s3://} checkpoints; failures are {@link Outlines.FormatException}s, and a hole read's
 * failure is rethrown by the {@link Outlines} call that made it, as itself.
 */
final class FormatStaging extends StagingNatives {
    static final FormatStaging INSTANCE = new FormatStaging();

    private static volatile Reader reader;

    private FormatStaging() {}

    @Override
    protected String outlineRangesMissing(String path, String fetched) {
        return Outlines.call(() -> string(FormatNative.outlineRangesMissing(utf8(path), utf8(fetched))));
    }

    @Override
    protected String shardedOutlineRangesMissing(String dir, String fetched, boolean everyItem) {
        return Outlines.call(() -> string(FormatNative.shardedOutlineRangesMissing(utf8(dir), utf8(fetched),
                everyItem)));
    }

    @Override
    protected String safetensorsIndexFiles(String path) {
        return Outlines.call(() -> string(FormatNative.safetensorsIndexFiles(utf8(path))));
    }

    @Override
    protected void registerStagedFile(String path, String held) {
        FormatNative.registerStagedFile(utf8(path), utf8(held), reader());
    }

    @Override
    protected void unregisterStagedFile(String path) {
        FormatNative.unregisterStagedFile(utf8(path));
    }

    @Override
    protected RuntimeException withMessage(RuntimeException failure, String message) {
        return new Outlines.FormatException(message, failure);
    }

    @Override
    protected boolean isFormatError(RuntimeException e) {
        return e instanceof Outlines.FormatException;
    }

    // One callback for every file: JavaCPP binds a callback class to one live instance.
    private static Reader reader() {
        if (reader == null) {
            synchronized (FormatStaging.class) {
                if (reader == null) {
                    reader = new Reader();
                }
            }
        }
        return reader;
    }

    private static final class Reader extends FormatNative.HoleReader {
        @Override
        public int call(BytePointer path, long offset, long size, Pointer dest) {
            return readHole(path, offset, size, dest);
        }
    }
}
