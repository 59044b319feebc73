package io.fabricckpt.core;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A {@code collections.OrderedDict}, the type of every {@code state_dict()}. Besides its entries it
 * may carry instance attributes (Python pickles them as the object's state): a state dict keeps its
 * per-module versions in {@code _metadata}.
 * <p>Thread-safety: Not thread-safe: like the LinkedHashMap it extends, confine it to one thread or
 * publish it safely.
 */
public final class PyOrderedDict extends LinkedHashMap<Object, Object> {
    private static final long serialVersionUID = 1L;

    /** Instance attributes, e.g. {"_metadata": OrderedDict(...)}; null when there are none. */
    private Map<Object, Object> attributes;

    public PyOrderedDict() {}

    public PyOrderedDict(Map<?, ?> entries) {
        super(entries);
    }

    public Map<Object, Object> attributes() {
        return attributes;
    }

    public void setAttributes(Map<Object, Object> attributes) {
        this.attributes = attributes;
    }

    /** The {@code _metadata} attribute of a state dict, or null. */
    public Object metadata() {
        return attributes == null ? null : attributes.get("_metadata");
    }
}
