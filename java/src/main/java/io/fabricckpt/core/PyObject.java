package io.fabricckpt.core;

import java.util.List;
import java.util.Map;

/**
 * A Python object of a class this library does not model (for example {@code argparse.Namespace}),
 * kept as the recipe pickle uses to build it, so that it is written back unchanged. Nothing is ever
 * executed.
 *
 * @param construction how pickle builds it: {@code callable(*args)} or {@code cls.__new__(cls, *args)}
 * @param callable     usually a {@link PyGlobal} naming the class or function
 * @param args         positional arguments
 * @param kwargs       keyword arguments ({@code NEWOBJ_EX} only), or null
 * @param state        the state passed to {@code __setstate__} / {@code __dict__.update}, or null
 * @param listItems    items appended after construction
 * @param dictItems    items set after construction, in order
 * <p>Thread-safety: Immutable as a record (its parts are as safe as they are).
 */
public record PyObject(Construction construction, Object callable, PyTuple args, Map<Object, Object> kwargs,
        Object state, List<Object> listItems, List<Map.Entry<Object, Object>> dictItems) {

    public enum Construction { REDUCE, NEW_OBJ, NEW_OBJ_EX }

    public PyObject {
        listItems = List.copyOf(listItems);
        dictItems = List.copyOf(dictItems);
    }

    /** The class or function that builds it, when it is a named global. */
    public PyGlobal type() {
        return callable instanceof PyGlobal g ? g : null;
    }
}
