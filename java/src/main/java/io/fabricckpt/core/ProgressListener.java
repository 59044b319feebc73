package io.fabricckpt.core;

/**
 * Told how far a long save or load is. Called from a background thread a few times a second while
 * the operation runs, then once more, with {@code bytesDone == bytesTotal}, from the thread that ran
 * the operation when it succeeded. Keep it quick: it delays later reports, never the operation.
 */
@FunctionalInterface
public interface ProgressListener {
    /**
     * @param bytesDone bytes read or written so far
     * @param bytesTotal bytes in all (0 while not yet known)
     */
    void onProgress(long bytesDone, long bytesTotal);
}
