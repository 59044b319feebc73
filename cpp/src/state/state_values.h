// Reading and writing the plain Python values of optimizer and scheduler state dicts: numbers,
// flags, lists, dicts, with errors that name the key. Private to the state layer.
#pragma once

#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/value.h"

namespace fabricckpt::state::detail {

// Python's int literal 0 where that is the default (weight_decay=0, momentum=0, ...): equal values keep that type.
inline ValuePtr int_zero_or_float(double v) { return v == 0.0 ? Value::integer(0) : Value::floating(v); }

// A number as Python would accept it: bool, int, float or a one-element tensor.
double number(const Value& v, const std::string& what);
// A bool (or an int standing for one).
bool flag(const Value& v, const std::string& what);
// An int; a float with an integral value is accepted.
int64_t integer(const Value& v, const std::string& what);
const Value::Items& sequence(const Value& v, const std::string& what);
const Dict& dict_of(const Value& v, const std::string& what);
// A list of numbers.
std::vector<double> numbers(const Value& v, const std::string& what);

}  // namespace fabricckpt::state::detail
