package io.fabricckpt.cli;

import io.fabricckpt.core.ProgressListener;
import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line progress bar on stderr for long saves and loads: {@code label [#####.....] 52% 1.1/2.1 GB
 * 1.9 GB/s}, redrawn in place with {@code \r} and ended by {@link #finish()}. Draws nothing for work
 * that is over before the first report.
 */
public final class ProgressBar implements ProgressListener {
    private static final int WIDTH = 30;

    private final String label;
    private final PrintStream out;
    private final long start = System.nanoTime();
    private boolean drawn;

    public ProgressBar(String label) {
        this(label, System.err);
    }

    public ProgressBar(String label, PrintStream out) {
        this.label = label;
        this.out = out;
    }

    @Override
    public synchronized void onProgress(long bytesDone, long bytesTotal) {
        if (bytesTotal <= 0) {
            return;
        }
        double fraction = Math.min(1.0, (double) bytesDone / bytesTotal);
        int filled = (int) Math.round(fraction * WIDTH);
        double seconds = Math.max(1e-9, (System.nanoTime() - start) / 1e9);
        out.print(String.format(Locale.ROOT, "\r%s [%s%s] %3d%% %.2f/%.2f GB %.2f GB/s ", label, "#".repeat(filled),
                ".".repeat(WIDTH - filled), Math.round(fraction * 100), bytesDone / 1e9, bytesTotal / 1e9,
                bytesDone / 1e9 / seconds));
        out.flush();
        drawn = true;
    }

    /** Ends the line, if one was drawn. */
    public synchronized void finish() {
        if (drawn) {
            out.println();
            drawn = false;
        }
    }
}
