package io.fabricckpt.compat;

import io.fabricckpt.Fabric;
import io.fabricckpt.TorchFiles;
import io.fabricckpt.core.Parameter;
import io.fabricckpt.core.PyFrozenSet;
import io.fabricckpt.core.PyGlobal;
import io.fabricckpt.core.PyObject;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.PyTuple;
import io.fabricckpt.core.ReadOptions;
import io.fabricckpt.core.WriteOptions;
import java.math.BigInteger;
import java.nio.file.Path;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * The Java side of python-compat-tests (run by pytest in a subprocess):
 * <ul>
 *   <li>{@code describe SRC}: prints Java's view of a checkpoint as JSON (types, dtypes, shapes, values)</li>
 *   <li>{@code roundtrip SRC DST [ARCHIVE] [--allow-unsafe-globals]}: reads into Java values and writes them back</li>
 *   <li>{@code unsafe-globals SRC}: prints the globals torch's weights_only load refuses, one per line</li>
 *   <li>{@code read-weights-only SRC}: reads as torch.load(weights_only=True) would, prints ok</li>
 *   <li>{@code roundtrip-location SRC DST}, {@code describe-location SRC}: roundtrip and describe of
 *       locations as users write them (a path or an {@code s3://} URL)</li>
 *   <li>{@code write-sample DST}: writes the state python-compat-tests/test_java_writes.py expects</li>
 *   <li>{@code schedule SRC STEPS SAVED NEXT OUT}, {@code plateau SRC METRICS OUT}: SGD + StepLR and SGD +
 *       ReduceLROnPlateau runs for test_schedulers.py ({@link ScheduleTool})</li>
 *   <li>{@code convert SRC DST}: the library's {@link TorchFiles#convert} (the reference the CLI's
 *       torch-free convert must match byte for byte)</li>
 * </ul>
 */
public final class CompatTool {
    private CompatTool() {}

    public static void main(String[] args) {
        switch (args[0]) {
            case "describe" -> System.out.println(json(TorchFiles.read(Path.of(args[1]))));
            case "roundtrip" -> {
                // roundtrip SRC DST [ARCHIVE] [--allow-unsafe-globals]: the flag writes globals outside
                // torch's weights_only allowlist too (files Python itself only loads with weights_only=False).
                List<String> rest = new java.util.ArrayList<>(List.of(args).subList(1, args.length));
                boolean allowUnsafe = rest.remove("--allow-unsafe-globals");
                Object value = TorchFiles.read(Path.of(rest.get(0)));
                String archive = rest.size() > 2 ? rest.get(2) : "archive";
                TorchFiles.write(Path.of(rest.get(1)), value, WriteOptions.DEFAULT.withArchiveName(archive)
                        .withUnsafeGlobalsAllowed(allowUnsafe));
            }
            case "convert" -> TorchFiles.convert(Path.of(args[1]), Path.of(args[2]));
            case "unsafe-globals" -> TorchFiles.unsafeGlobals(Path.of(args[1])).forEach(System.out::println);
            case "read-weights-only" -> {
                TorchFiles.read(Path.of(args[1]), ReadOptions.DEFAULT.withWeightsOnly(true));
                System.out.println("ok");
            }
            case "write-sample" -> new Fabric().save(args[1], sample()); // a path or an s3:// URL
            case "roundtrip-location" -> // SRC DST, each a path or an s3:// URL
                    TorchFiles.write(args[2], TorchFiles.read(args[1]), WriteOptions.DEFAULT, null);
            case "describe-location" -> System.out.println(json(TorchFiles.read(args[1])));
            case "train" -> train(args[1], Path.of(args[2]), Path.of(args[3]));
            case "schedule" -> ScheduleTool.run(args[1], Integer.parseInt(args[2]), Path.of(args[3]),
                    Integer.parseInt(args[4]), Path.of(args[5]));
            case "plateau" -> ScheduleTool.plateau(args[1], args[2], Path.of(args[3]));
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    /**
     * {@code train SRC DATA OUT}: the MLP of test_continuity.py with Adam(lr=1e-2), started from the
     * Fabric checkpoint SRC (or from torch.manual_seed(0) when SRC is "-"), trained on every batch of
     * DATA ({'x': [steps, batch, 4], 'y': [steps, batch, 2]}); prints one loss per line and saves
     * {model, optimizer, step} to OUT.
     */
    static void train(String source, Path data, Path out) {
        torch.manual_seed(0);
        io.fabricckpt.Net model = new io.fabricckpt.Net(4, 8, 2);
        org.bytedeco.pytorch.Adam optimizer = new org.bytedeco.pytorch.Adam(model.parameters(),
                new org.bytedeco.pytorch.AdamOptions(1e-2));
        Map<String, Object> state = new java.util.HashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", 0L);
        Fabric fabric = new Fabric();
        if (!source.equals("-")) {
            fabric.load(Path.of(source), state);
        }
        @SuppressWarnings("unchecked")
        Map<Object, Object> batches = (Map<Object, Object>) TorchFiles.read(data);
        Tensor xs = (Tensor) batches.get("x");
        Tensor ys = (Tensor) batches.get("y");
        long step = (Long) state.get("step");
        for (long i = 0; i < xs.size(0); i++) {
            optimizer.zero_grad();
            Tensor loss = torch.mse_loss(model.forward(xs.get(i)), ys.get(i));
            loss.backward();
            optimizer.step();
            step++;
            System.out.println(loss.item_double());
        }
        state.put("step", step);
        Map<String, Object> checkpoint = new LinkedHashMap<>();
        checkpoint.put("model", model);
        checkpoint.put("optimizer", optimizer);
        checkpoint.put("step", step);
        fabric.save(out, checkpoint);
    }

    /** Keep in sync with expected_sample() in python-compat-tests/test_java_writes.py. */
    static Map<String, Object> sample() {
        Map<String, Object> state = new LinkedHashMap<>();
        Tensor weight = torch.arange(new Scalar(12.0), new TensorOptions(torch.ScalarType.Float)).reshape(3, 4);
        PyOrderedDict model = new PyOrderedDict();
        model.put("weight", weight);
        model.put("bias", torch.arange(new Scalar(3.0), new TensorOptions(torch.ScalarType.Float)));
        PyOrderedDict metadata = new PyOrderedDict();
        metadata.put("", new LinkedHashMap<>(Map.of("version", 1L)));
        Map<Object, Object> attributes = new LinkedHashMap<>();
        attributes.put("_metadata", metadata);
        model.setAttributes(attributes);
        state.put("model", model);
        state.put("row", weight.select(0, 1));
        state.put("half", torch.arange(new Scalar(4.0), new TensorOptions(torch.ScalarType.Half)));
        state.put("bf16", torch.arange(new Scalar(4.0), new TensorOptions(torch.ScalarType.BFloat16)));
        state.put("flags", torch.arange(new Scalar(4L)).remainder(new Scalar(2L)).to(torch.ScalarType.Bool));
        state.put("int8", torch.arange(new Scalar(-2L), new Scalar(2L), new TensorOptions(torch.ScalarType.Char)));
        state.put("steps", torch.scalar_tensor(new Scalar(5L), new TensorOptions(torch.ScalarType.Long)));
        state.put("iteration", 1000L);
        state.put("big", new BigInteger("2").pow(70));
        state.put("lr", 0.001);
        state.put("name", "java ✓");
        state.put("betas", PyTuple.of(0.9, 0.999));
        state.put("history", List.of(1L, 2L, 3L));
        state.put("blob", new byte[] {0, 1, 2, 3});
        state.put("nothing", null);
        state.put("done", true);
        return state;
    }

    // ---------------------------------------------------------------- JSON view

    static String json(Object v) {
        StringBuilder out = new StringBuilder();
        write(v, out);
        return out.toString();
    }

    private static void write(Object v, StringBuilder out) {
        if (v == null) {
            out.append("{\"t\":\"none\"}");
        } else if (v instanceof Boolean b) {
            out.append("{\"t\":\"bool\",\"v\":").append(b).append('}');
        } else if (v instanceof Long || v instanceof BigInteger) {
            out.append("{\"t\":\"int\",\"v\":\"").append(v).append("\"}");
        } else if (v instanceof Double d) {
            out.append("{\"t\":\"float\",\"v\":\"").append(Double.toString(d)).append("\"}");
        } else if (v instanceof String s) {
            out.append("{\"t\":\"str\",\"v\":");
            string(s, out);
            out.append('}');
        } else if (v instanceof byte[] b) {
            out.append("{\"t\":\"bytes\",\"hex\":\"");
            for (byte x : b) {
                out.append(String.format("%02x", x));
            }
            out.append("\"}");
        } else if (v instanceof Tensor t) {
            tensor(t, "tensor", out);
        } else if (v instanceof Parameter p) {
            tensor(p.data(), "parameter", out);
        } else if (v instanceof PyGlobal g) {
            out.append("{\"t\":\"global\",\"module\":");
            string(g.module(), out);
            out.append(",\"name\":");
            string(g.name(), out);
            out.append('}');
        } else if (v instanceof PyObject o) {
            out.append("{\"t\":\"object\",\"type\":");
            write(o.callable(), out);
            out.append(",\"args\":");
            write(o.args(), out);
            out.append(",\"state\":");
            write(o.state(), out);
            out.append('}');
        } else if (v instanceof Map<?, ?> m) {
            out.append("{\"t\":\"").append(v instanceof PyOrderedDict ? "odict" : "dict").append("\",\"items\":[");
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                out.append(first ? "" : ",").append('[');
                write(e.getKey(), out);
                out.append(',');
                write(e.getValue(), out);
                out.append(']');
                first = false;
            }
            out.append(']');
            if (v instanceof PyOrderedDict od && od.attributes() != null) {
                out.append(",\"attrs\":");
                write(od.attributes(), out);
            }
            out.append('}');
        } else if (v instanceof PyFrozenSet fs) {
            items("frozenset", fs.items(), out);
        } else if (v instanceof PyTuple t) {
            items("tuple", t, out);
        } else if (v instanceof Set<?> s) {
            items("set", s, out);
        } else if (v instanceof List<?> l) {
            items("list", l, out);
        } else {
            throw new IllegalStateException("unexpected " + v.getClass());
        }
    }

    private static void items(String type, Collection<?> items, StringBuilder out) {
        out.append("{\"t\":\"").append(type).append("\",\"items\":[");
        boolean first = true;
        for (Object item : items) {
            out.append(first ? "" : ",");
            write(item, out);
            first = false;
        }
        out.append("]}");
    }

    private static void tensor(Tensor t, String type, StringBuilder out) {
        out.append("{\"t\":\"").append(type).append("\",\"dtype\":\"").append(t.scalar_type().intern().name())
                .append("\",\"shape\":[");
        for (int i = 0; i < t.dim(); i++) {
            out.append(i == 0 ? "" : ",").append(t.size(i));
        }
        out.append("],\"requires_grad\":").append(t.requires_grad()).append(",\"values\":[");
        Tensor flat = t.detach().reshape(-1).to(torch.ScalarType.Double);
        long n = Math.min(flat.numel(), 4096);
        for (long i = 0; i < n; i++) {
            double d = flat.get(i).item_double();
            out.append(i == 0 ? "" : ",").append('"').append(Double.toString(d)).append('"');
        }
        out.append("]}");
    }

    private static void string(String s, StringBuilder out) {
        out.append('"');
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c >= 0x7f) {
                out.append(String.format("\\u%04x", (int) c)); // UTF-16 units, as JSON escapes them
            } else {
                out.append(c);
            }
        }
        out.append('"');
    }
}
