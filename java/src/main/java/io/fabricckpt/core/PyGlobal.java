package io.fabricckpt.core;

/**
 * A module-level Python name stored by reference, such as {@code torch.float32} or a class.
 * Nothing is ever imported or executed: it is only a name.
 */
public record PyGlobal(String module, String name) {
    @Override
    public String toString() {
        return module + "." + name;
    }
}
