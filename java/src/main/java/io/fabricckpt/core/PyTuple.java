package io.fabricckpt.core;

import java.util.AbstractList;
import java.util.Arrays;
import java.util.List;
import java.util.RandomAccess;

/**
 * A Python tuple: an immutable list, kept distinct from {@link List} values (Python lists).
 * <p>Thread-safety: Immutable and thread-safe (its items are as safe as they are).
 */
public final class PyTuple extends AbstractList<Object> implements RandomAccess {
    private final Object[] items;

    private PyTuple(Object[] items) {
        this.items = items;
    }

    public static PyTuple of(Object... items) {
        return new PyTuple(items.clone());
    }

    public static PyTuple copyOf(List<?> items) {
        return new PyTuple(items.toArray());
    }

    @Override
    public Object get(int index) {
        return items[index];
    }

    @Override
    public int size() {
        return items.length;
    }

    @Override
    public String toString() {
        String inner = Arrays.toString(items);
        return "(" + inner.substring(1, inner.length() - 1) + (items.length == 1 ? ",)" : ")");
    }
}
