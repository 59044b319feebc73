package io.fabricckpt.core;

import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Set;

/**
 * A Python {@code frozenset}, kept distinct from {@link Set} values (Python sets).
 * <p>Thread-safety: Not thread-safe: like the collections it extends, confine it to one thread or publish
 * it safely.
 */
public record PyFrozenSet(Set<Object> items) {
    public PyFrozenSet {
        items = Collections.unmodifiableSet(new LinkedHashSet<>(items));
    }
}
