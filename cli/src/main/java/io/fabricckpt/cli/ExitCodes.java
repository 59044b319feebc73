package io.fabricckpt.cli;

/** The exit codes of {@code fabric-ckpt}. */
public final class ExitCodes {
    /** Done; for checks: nothing found. */
    public static final int OK = 0;
    /** A check failed: {@code diff} found differences, {@code verify} found corruption. */
    public static final int CHECK_FAILED = 1;
    /** The command line was wrong (unknown command or option, missing or bad argument). */
    public static final int USAGE = 2;
    /** A file or directory could not be read or written. */
    public static final int IO = 3;
    /** Anything else went wrong (the message says what). */
    public static final int FAILED = 4;

    private ExitCodes() {}
}
