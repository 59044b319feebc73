package io.fabricckpt.core;

import java.util.Map;

/**
 * An object that saves and restores itself through a state dictionary, as Python objects with
 * {@code state_dict()} and {@code load_state_dict()} do in a Fabric state. A sampler position, a
 * learning-rate schedule or an EMA of the weights are typical.
 *
 * <p>The dictionary may hold the values a checkpoint holds (numbers, strings, tensors, lists, maps,
 * {@link PyTuple}...). {@link #loadStateDict} receives what {@link #stateDict} returned, read back.
 * <p>Thread-safety: Called from the thread that saves or loads; implementations need no locking of their
 * own unless they are shared.
 */
public interface Stateful {
    Map<String, Object> stateDict();

    void loadStateDict(Map<String, Object> stateDict);
}
