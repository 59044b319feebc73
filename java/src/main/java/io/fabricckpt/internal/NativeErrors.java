package io.fabricckpt.internal;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.CheckpointStorageException;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.DistributedException;
import io.fabricckpt.core.StateMismatchException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.util.Arrays;
import java.util.List;

/**
 * The typed exception for a C++ error. JavaCPP rethrows C++ exceptions as RuntimeException; for the
 * library's own errors its message starts with their kind and details (fabricckpt::jni::describe_error,
 * cpp/src/jni/error_description.cpp): {@code \x1e kind {\x1f field} \x1e message}.
 */
public final class NativeErrors {
    private static final char RECORD = '\u001e';
    private static final String FIELD = "\u001f";
    private static final String ITEM = "\u001d";
    // errno values (Linux) that mean "nothing there" and "not allowed"
    private static final int ENOENT = 2, EACCES = 13, EPERM = 1, ENOTDIR = 20;

    private NativeErrors() {}

    /** {@code e} as the library's exception type, its message prefixed by {@code context} (may be empty). */
    public static CheckpointException translate(RuntimeException e, String context) {
        if (e instanceof CheckpointException ce) {
            return ce;
        }
        String text = e.getMessage() == null ? e.toString() : e.getMessage();
        String kind = "";
        String[] fields = {};
        if (!text.isEmpty() && text.charAt(0) == RECORD) {
            int end = text.indexOf(RECORD, 1);
            if (end > 0) {
                String[] head = text.substring(1, end).split(FIELD, -1);
                kind = head[0];
                fields = Arrays.copyOfRange(head, 1, head.length);
                text = text.substring(end + 1);
            }
        }
        String message = context.isEmpty() ? text : context + ": " + text;
        return switch (kind) {
            case "format" -> new CorruptCheckpointException(message, e);
            case "state" -> new StateMismatchException(message, List.of(), List.of(), List.of(), e);
            case "mismatch" -> new StateMismatchException(message, items(fields, 0), items(fields, 1),
                    items(fields, 2), e);
            case "io" -> storage(message, fields, e);
            case "distributed" -> new DistributedException(message, number(fields, 0), field(fields, 1), e);
            default -> new CheckpointException(message, e);
        };
    }

    public static CheckpointException translate(RuntimeException e) {
        return translate(e, "");
    }

    private static CheckpointException storage(String message, String[] fields, RuntimeException e) {
        int errno = number(fields, 0);
        String file = field(fields, 1).isEmpty() ? null : field(fields, 1);
        FileSystemException cause = switch (errno) {
            case ENOENT, ENOTDIR -> new NoSuchFileException(file, null, message);
            case EACCES, EPERM -> new AccessDeniedException(file, null, message);
            default -> new FileSystemException(file, null, message);
        };
        cause.initCause(e);
        return errno == ENOENT || errno == ENOTDIR ? new CheckpointNotFoundException(message, cause)
                : new CheckpointStorageException(message, cause);
    }

    private static String field(String[] fields, int i) {
        return i < fields.length ? fields[i] : "";
    }

    private static int number(String[] fields, int i) {
        try {
            return Integer.parseInt(field(fields, i));
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private static List<String> items(String[] fields, int i) {
        String f = field(fields, i);
        return f.isEmpty() ? List.of() : List.of(f.split(ITEM, -1));
    }
}
