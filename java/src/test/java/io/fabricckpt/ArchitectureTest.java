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
        int rc = jdeps.run(new PrintWriter(out), new PrintWriter(out), "-verbose:package", "-filter:none",
                "--ignore-missing-deps", classes().toString());
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

    /** No public or protected member of an API class takes, returns or exposes an internal type. */
    @Test
    void noInternalTypeInAPublicSignature() throws Exception {
        Path root = classes();
        List<String> leaks = new ArrayList<>();
        try (Stream<Path> files = Files.walk(root)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".class")).toList()) {
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
