package io.fabricckpt.internal;

import io.fabricckpt.core.IncompatibleKeys;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Module;

/** Python's {@code model.load_state_dict}, with its {@code _IncompatibleKeys} as a Java value. */
public final class ModuleStates {
    private ModuleStates() {}

    /**
     * Loads {@code stateDict} into {@code module}.
     *
     * @param context what to name in an error (the file and key), may be empty
     * @return what a non-strict load left out (empty when strict)
     */
    public static IncompatibleKeys load(Module module, NativeValue stateDict, boolean strict, String context) {
        String report;
        try {
            report = NativeCalls.string(FabricNative.loadModuleStateDict(module, stateDict, strict));
        } catch (RuntimeException e) {
            throw NativeErrors.translate(e, context);
        }
        List<String> missing = new ArrayList<>();
        List<String> unexpected = new ArrayList<>();
        for (String line : report.split("\n")) {
            String[] parts = line.split("\t");
            List<String> into = parts[0].equals("missing") ? missing : parts[0].equals("unexpected") ? unexpected : null;
            if (into != null) {
                into.addAll(List.of(parts).subList(1, parts.length));
            }
        }
        return new IncompatibleKeys(missing, unexpected);
    }
}
