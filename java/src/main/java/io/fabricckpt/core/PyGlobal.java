package io.fabricckpt.core;

/**
 * A module-level Python name stored by reference, such as {@code torch.float32} or a class.
 * Nothing is ever imported or executed: it is only a name.
 * <p>Thread-safety: Immutable and thread-safe.
 */
public record PyGlobal(String module, String name) {
    @Override
    public String toString() {
        return module + "." + name;
    }
}
