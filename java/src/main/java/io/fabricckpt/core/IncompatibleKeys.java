package io.fabricckpt.core;

import java.util.List;

/**
 * What a non-strict model load could not match, as Python's {@code _IncompatibleKeys}: keys of the
 * model missing from the state dict, and keys of the state dict the model does not have.
 * <p>Thread-safety: Immutable and thread-safe.
 */
public record IncompatibleKeys(List<String> missingKeys, List<String> unexpectedKeys) {
    public IncompatibleKeys {
        missingKeys = List.copyOf(missingKeys);
        unexpectedKeys = List.copyOf(unexpectedKeys);
    }

    /** Whether everything matched. */
    public boolean isEmpty() {
        return missingKeys.isEmpty() && unexpectedKeys.isEmpty();
    }
}
