package io.fabricckpt.core;

import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Set;

/** A Python {@code frozenset}, kept distinct from {@link Set} values (Python sets). */
public record PyFrozenSet(Set<Object> items) {
    public PyFrozenSet {
        items = Collections.unmodifiableSet(new LinkedHashSet<>(items));
    }
}
