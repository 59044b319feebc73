package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.Executable;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.spi.ToolProvider;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** The layering docs/ARCHITECTURE.md describes, checked on the compiled classes. */
class ArchitectureTest {
    private static final Set<String> API = Set.of("io.fabricckpt", "io.fabricckpt.core", "io.fabricckpt.dist");

    private static Path classes() throws URISyntaxException {
        return Path.of(Fabric.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    }

    /** jdeps' package graph of the library's classes: no package depends on itself through others. */
    @Test
    void packagesFormNoCycle() throws Exception {
        ToolProvider jdeps = ToolProvider.findFirst("jdeps").orElseThrow();
        StringWriter out = new StringWriter();
        // the module's dependencies, where the class loader found them
        // (the AWS SDK's modules and theirs: every jar of the test class path under software/amazon)
        String modulePath = Stream.concat(Stream.of(org.bytedeco.javacpp.Pointer.class,
                org.bytedeco.pytorch.Tensor.class, org.bytedeco.openblas.global.openblas.class,
                org.slf4j.LoggerFactory.class).map(ArchitectureTest::jarOf),
                Stream.of(System.getProperty("java.class.path").split(java.io.File.pathSeparator))
                        .filter(p -> p.endsWith(".jar") && p.contains("/software/amazon/")))
                .distinct().collect(java.util.stream.Collectors.joining(":"));
        int rc = jdeps.run(new PrintWriter(out), new PrintWriter(out), "-verbose:package", "-filter:none",
                "--ignore-missing-deps", "--multi-release", "17", "--module-path", modulePath, classes().toString());
        assertEquals(0, rc, out.toString());
        Map<String, Set<String>> edges = new HashMap<>();
        String from = null;
        for (String line : out.toString().split("\n")) {
            // "   io.fabricckpt.dist    -> io.fabricckpt.internal    classes"
            String[] parts = line.trim().split("\\s+");
            if (parts.length >= 3 && parts[1].equals("->")) {
                from = parts[0];
                if (from.startsWith("io.fabricckpt") && parts[2].startsWith("io.fabricckpt") && !parts[2].equals(from)) {
                    edges.computeIfAbsent(from, k -> new TreeSet<>()).add(parts[2]);
                }
            }
        }
        assertTrue(edges.containsKey("io.fabricckpt"), "jdeps printed no package edges:\n" + out);
        for (String start : edges.keySet()) {
            List<String> cycle = cycleFrom(start, start, edges, new HashSet<>(), new ArrayList<>(List.of(start)));
            assertTrue(cycle == null, "package cycle: " + cycle + "\n" + edges);
        }
    }

    private static String jarOf(Class<?> type) {
        try {
            return Path.of(type.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static List<String> cycleFrom(String start, String at, Map<String, Set<String>> edges, Set<String> seen,
            List<String> path) {
        for (String next : edges.getOrDefault(at, Set.of())) {
            if (next.equals(start)) {
                List<String> cycle = new ArrayList<>(path);
                cycle.add(next);
                return cycle;
            }
            if (seen.add(next)) {
                path.add(next);
                List<String> found = cycleFrom(start, next, edges, seen, path);
                if (found != null) {
                    return found;
                }
                path.remove(path.size() - 1);
            }
        }
        return null;
    }

    /** module-info exports exactly the API packages. */
    @Test
    void theModuleExportsOnlyTheApi() throws Exception {
        Path info = classes().resolve("module-info.class");
        assertTrue(Files.exists(info), "no module-info.class in " + classes());
        java.lang.module.ModuleDescriptor module;
        try (var in = Files.newInputStream(info)) {
            module = java.lang.module.ModuleDescriptor.read(in);
        }
        assertEquals("io.fabricckpt", module.name());
        assertEquals(API, new java.util.TreeSet<>(module.exports().stream()
                .map(java.lang.module.ModuleDescriptor.Exports::source).toList()).stream()
                .collect(java.util.stream.Collectors.toSet()));
    }

    /** No public or protected member of an API class takes, returns or exposes an internal type. */
    @Test
    void noInternalTypeInAPublicSignature() throws Exception {
        Path root = classes();
        List<String> leaks = new ArrayList<>();
        try (Stream<Path> files = Files.walk(root)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".class")
                    && !f.getFileName().toString().equals("module-info.class")).toList()) {
                String name = root.relativize(file).toString().replace('/', '.').replaceAll("\\.class$", "");
                Class<?> type = Class.forName(name, false, getClass().getClassLoader());
                if (!API.contains(type.getPackageName()) || !isVisible(type)) {
                    continue;
                }
                List<Type> exposed = new ArrayList<>();
                for (Method m : type.getDeclaredMethods()) {
                    if (isVisible(m.getModifiers()) && !m.isSynthetic()) {
                        exposed.add(m.getGenericReturnType());
                        exposed.addAll(List.of(m.getGenericParameterTypes()));
                    }
                }
                for (Executable c : type.getDeclaredConstructors()) {
                    if (isVisible(c.getModifiers())) {
                        exposed.addAll(List.of(c.getGenericParameterTypes()));
                    }
                }
                for (Field f : type.getDeclaredFields()) {
                    if (isVisible(f.getModifiers())) {
                        exposed.add(f.getGenericType());
                    }
                }
                exposed.add(type.getGenericSuperclass());
                exposed.addAll(List.of(type.getGenericInterfaces()));
                for (Type t : exposed) {
                    if (t != null && mentionsInternal(t)) {
                        leaks.add(type.getName() + ": " + t.getTypeName());
                    }
                }
            }
        }
        assertTrue(leaks.isEmpty(), "internal types in public signatures: " + leaks);
    }

    private static boolean isVisible(Class<?> type) {
        for (Class<?> c = type; c != null; c = c.getEnclosingClass()) {
            if (!isVisible(c.getModifiers())) {
                return false;
            }
        }
        return true;
    }

    private static boolean isVisible(int modifiers) {
        return Modifier.isPublic(modifiers) || Modifier.isProtected(modifiers);
    }

    private static boolean mentionsInternal(Type t) {
        if (t instanceof Class<?> c) {
            return c.getPackageName().startsWith("io.fabricckpt.internal")
                    || (c.isArray() && mentionsInternal(c.getComponentType()));
        }
        if (t instanceof ParameterizedType p) {
            return mentionsInternal(p.getRawType()) || Stream.of(p.getActualTypeArguments())
                    .anyMatch(ArchitectureTest::mentionsInternal);
        }
        return false;
    }
}
