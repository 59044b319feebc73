package io.fabricckpt.internal;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyFrozenSet;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/**
 * Converts between C++ checkpoint trees and Java values:
 * None=null, bool=Boolean, int=Long (BigInteger beyond 64 bits), float=Double, str=String,
 * bytes=byte[], tuple={@link PyTuple}, list={@link List}, dict={@link LinkedHashMap},
 * OrderedDict={@link PyOrderedDict}, set={@link Set}, frozenset={@link PyFrozenSet}, tensors=the
 * preset's {@link Tensor}, parameters={@link Parameter}, other objects={@link PyObject}/{@link PyGlobal}.
 *
 * <p>Shared references survive both ways: a node referenced twice becomes one Java object, and one
 * Java object becomes one node, so that pickle's memo (and the bytes) are preserved on a round trip.
 */
public final class ValueConverter {
    private ValueConverter() {}

    // ---------------------------------------------------------------- native -> Java

    public static Object toJava(NativeValue root) {
        return new ToJava().convert(root);
    }

    /** One conversion session: nodes shared within it become one Java object. */
    public static final class ToJava {
        private final Map<Long, Object> seen = new HashMap<>();

        /** Converts a child handle and frees it at once (it would pin the native tree until GC). */
        private Object child(NativeValue c) {
            try {
                return convert(c);
            } finally {
                c.close();
            }
        }

        public Object convert(NativeValue v) {
            int kind = v.kind();
            switch (kind) {
                case NativeValue.NONE:
                    return null;
                case NativeValue.BOOL:
                    return v.boolValue();
                case NativeValue.INT:
                    return v.longValue();
                case NativeValue.FLOAT:
                    return v.doubleValue();
                default:
                    break;
            }
            long id = v.identity();
            Object known = seen.get(id);
            if (known != null) {
                return known;
            }
            Object out = switch (kind) {
                case NativeValue.BIG_INT -> bigInteger(bytes(v.bytesValue()));
                case NativeValue.STRING -> new String(bytes(v.bytesValue()), StandardCharsets.UTF_8);
                case NativeValue.BYTES -> bytes(v.bytesValue());
                case NativeValue.TUPLE -> {
                    Object[] items = new Object[v.size()];
                    for (int i = 0; i < items.length; i++) {
                        items[i] = child(v.item(i));
                    }
                    yield PyTuple.of(items);
                }
                case NativeValue.LIST -> {
                    List<Object> list = new ArrayList<>(v.size());
                    seen.put(id, list); // before the items: a list may contain itself
                    for (int i = 0, n = v.size(); i < n; i++) {
                        list.add(child(v.item(i)));
                    }
                    yield list;
                }
                case NativeValue.SET, NativeValue.FROZEN_SET -> {
                    Set<Object> set = new LinkedHashSet<>();
                    for (int i = 0, n = v.size(); i < n; i++) {
                        set.add(child(v.item(i)));
                    }
                    yield kind == NativeValue.SET ? set : new PyFrozenSet(set);
                }
                case NativeValue.DICT -> dict(v, id);
                case NativeValue.GLOBAL -> new PyGlobal(string(v.globalModule()), string(v.globalName()));
                case NativeValue.OBJECT -> object(v);
                case NativeValue.TENSOR -> tensor(v);
                default -> throw new CheckpointException("unexpected node kind " + kind + " in checkpoint tree");
            };
            seen.put(id, out);
            return out;
        }

        private Map<Object, Object> dict(NativeValue v, long id) {
            Map<Object, Object> map;
            if (v.ordered()) {
                PyOrderedDict od = new PyOrderedDict();
                map = od;
                seen.put(id, map);
                Object attributes = child(v.dictState());
                if (attributes != null) {
                    if (!(attributes instanceof Map<?, ?> attrs)) {
                        throw new CheckpointException("OrderedDict state is not a dict: " + attributes);
                    }
                    @SuppressWarnings("unchecked")
                    Map<Object, Object> typed = (Map<Object, Object>) attrs;
                    od.setAttributes(typed);
                }
            } else {
                map = new LinkedHashMap<>();
                seen.put(id, map);
            }
            for (int i = 0, n = v.size(); i < n; i++) {
                map.put(child(v.key(i)), child(v.value(i)));
            }
            return map;
        }

        private PyObject object(NativeValue v) {
            PyObject.Construction construction = PyObject.Construction.values()[v.construct()];
            Object callable = child(v.callable());
            Object args = child(v.args());
            @SuppressWarnings("unchecked")
            Map<Object, Object> kwargs = (Map<Object, Object>) child(v.kwargs()); // None -> null
            Object state = v.hasObjectState() ? child(v.objectState()) : null;
            List<Object> listItems = new ArrayList<>();
            for (int i = 0, n = v.listItemCount(); i < n; i++) {
                listItems.add(child(v.listItem(i)));
            }
            List<Map.Entry<Object, Object>> dictItems = new ArrayList<>();
            for (int i = 0, n = v.dictItemCount(); i < n; i++) {
                dictItems.add(new AbstractMap.SimpleImmutableEntry<>(child(v.dictItemKey(i)),
                        child(v.dictItemValue(i))));
            }
            PyTuple argTuple = args instanceof PyTuple t ? t : PyTuple.of(args);
            return new PyObject(construction, callable, argTuple, kwargs, state, listItems, dictItems);
        }

        private Object tensor(NativeValue v) {
            // A view on the node's at::Tensor, then the preset's copy constructor: a new Java-owned
            // handle on the same TensorImpl (no data copy) that outlives the native tree.
            Tensor tensor = new Tensor(new Tensor(v.tensor()));
            return v.isParameter() ? new Parameter(tensor, v.requiresGrad()) : tensor;
        }
    }

    private static byte[] bytes(BytePointer p) {
        if (p == null) { // JavaCPP maps an empty std::string to null
            return new byte[0];
        }
        try (p) {
            byte[] out = new byte[Math.toIntExact(p.limit())];
            p.get(out);
            return out;
        }
    }

    private static String string(BytePointer p) {
        return new String(bytes(p), StandardCharsets.UTF_8);
    }

    private static BigInteger bigInteger(byte[] littleEndian) {
        byte[] bigEndian = new byte[littleEndian.length];
        for (int i = 0; i < littleEndian.length; i++) {
            bigEndian[i] = littleEndian[littleEndian.length - 1 - i];
        }
        return bigEndian.length == 0 ? BigInteger.ZERO : new BigInteger(bigEndian);
    }

    // ---------------------------------------------------------------- Java -> native

    public static NativeValue toNative(Object root) {
        return new ToNative().convert(root);
    }

    /** One conversion session: a Java object met twice becomes one shared node. */
    public static final class ToNative {
        private final IdentityHashMap<Object, NativeValue> seen = new IdentityHashMap<>();
        private final IdentityHashMap<Object, Boolean> inProgress = new IdentityHashMap<>();

        public NativeValue convert(Object value) {
            if (value == null) {
                return NativeValue.newNone();
            }
            if (value instanceof Boolean b) {
                return NativeValue.newBool(b);
            }
            if (value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte) {
                return NativeValue.newLong(((Number) value).longValue());
            }
            if (value instanceof Double || value instanceof Float) {
                return NativeValue.newDouble(((Number) value).doubleValue());
            }
            NativeValue known = seen.get(value);
            if (known != null) {
                return known;
            }
            if (inProgress.put(value, Boolean.TRUE) != null) {
                throw new CheckpointException("the state contains a reference cycle through a "
                        + value.getClass().getSimpleName());
            }
            NativeValue out = build(value);
            inProgress.remove(value);
            seen.put(value, out);
            return out;
        }

        private NativeValue build(Object value) {
            if (value instanceof String s) {
                byte[] utf8 = s.getBytes(StandardCharsets.UTF_8);
                return NativeValue.newString(utf8, utf8.length);
            }
            if (value instanceof BigInteger big) {
                byte[] be = big.toByteArray();
                byte[] le = new byte[be.length];
                for (int i = 0; i < be.length; i++) {
                    le[i] = be[be.length - 1 - i];
                }
                return NativeValue.newBigInt(le, le.length);
            }
            if (value instanceof byte[] data) {
                return NativeValue.newBytes(data, data.length);
            }
            if (value instanceof Tensor t) {
                return tensor(t, false, t.requires_grad());
            }
            if (value instanceof Parameter p) {
                return tensor(p.data(), true, p.requiresGrad());
            }
            if (value instanceof PyTuple t) {
                return fill(NativeValue.newTuple(), t);
            }
            if (value instanceof PyFrozenSet fs) {
                return fill(NativeValue.newSet(true), fs.items());
            }
            if (value instanceof Set<?> s) {
                return fill(NativeValue.newSet(false), s);
            }
            if (value instanceof List<?> l) {
                return fill(NativeValue.newList(), l);
            }
            if (value instanceof PyOrderedDict od) {
                NativeValue dict = fillDict(NativeValue.newDict(true), od);
                if (od.attributes() != null) {
                    dict.setDictState(convert(od.attributes()));
                }
                return dict;
            }
            if (value instanceof Map<?, ?> m) {
                return fillDict(NativeValue.newDict(false), m);
            }
            if (value instanceof PyGlobal g) {
                byte[] module = g.module().getBytes(StandardCharsets.UTF_8);
                byte[] name = g.name().getBytes(StandardCharsets.UTF_8);
                return NativeValue.newGlobal(module, module.length, name, name.length);
            }
            if (value instanceof PyObject o) {
                return object(o);
            }
            throw new CheckpointException("cannot store a " + value.getClass().getName()
                    + " in a checkpoint: use numbers, strings, booleans, null, byte[], tensors, lists, maps, "
                    + "PyTuple or the other Py* types");
        }

        private NativeValue tensor(Tensor t, boolean parameter, boolean requiresGrad) {
            if (t == null || t.isNull() || !t.defined()) {
                throw new CheckpointException("cannot store an undefined tensor");
            }
            byte[] cpu = "cpu".getBytes(StandardCharsets.US_ASCII);
            return NativeValue.newTensor(t, requiresGrad, parameter, cpu, cpu.length);
        }

        private NativeValue fill(NativeValue target, Collection<?> items) {
            for (Object item : items) {
                target.append(convert(item));
            }
            return target;
        }

        private NativeValue fillDict(NativeValue target, Map<?, ?> map) {
            for (Map.Entry<?, ?> e : map.entrySet()) {
                target.put(convert(e.getKey()), convert(e.getValue()));
            }
            return target;
        }

        private NativeValue object(PyObject o) {
            NativeValue obj = NativeValue.newObject(o.construction().ordinal(), convert(o.callable()),
                    convert(o.args()));
            if (o.kwargs() != null) {
                obj.setKwargs(convert(o.kwargs()));
            }
            if (o.state() != null) {
                obj.setObjectState(convert(o.state()));
            }
            for (Object item : o.listItems()) {
                obj.addListItem(convert(item));
            }
            for (Map.Entry<Object, Object> e : o.dictItems()) {
                obj.addDictItem(convert(e.getKey()), convert(e.getValue()));
            }
            return obj;
        }
    }
}
