package io.fabricckpt.core;

import java.util.List;

/**
 * The checkpoint does not fit the state it is loaded into: requested keys it lacks, and for a model
 * (Python's {@code load_state_dict} errors) missing and unexpected parameter keys and tensors whose
 * shape differs. The lists are empty where they do not apply; the message is Python's wording.
 * <p>Thread-safety: Immutable (the lists are copies); safe to pass between threads.
 */
public class StateMismatchException extends CheckpointException {
    private static final long serialVersionUID = 1L;

    private final List<String> missingKeys;
    private final List<String> unexpectedKeys;
    private final List<String> shapeMismatches;

    public StateMismatchException(String message, List<String> missingKeys, List<String> unexpectedKeys,
            List<String> shapeMismatches, Throwable cause) {
        super(message, cause);
        this.missingKeys = List.copyOf(missingKeys);
        this.unexpectedKeys = List.copyOf(unexpectedKeys);
        this.shapeMismatches = List.copyOf(shapeMismatches);
    }

    /** Keys the state (or model) has that the checkpoint lacks. */
    public List<String> missingKeys() {
        return missingKeys;
    }

    /** Keys of a model's state dict in the checkpoint that the model does not have (strict loads only). */
    public List<String> unexpectedKeys() {
        return unexpectedKeys;
    }

    /** Tensors whose shapes differ, as {@code "fc.weight: checkpoint [2, 3], model [3, 3]"}. */
    public List<String> shapeMismatches() {
        return shapeMismatches;
    }
}
