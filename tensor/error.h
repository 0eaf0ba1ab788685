// peel::Error and the PEEL_CHECK macro: every failure names the op and the values involved.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace peel {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws peel::Error with a formatted message: PEEL_CHECK(a == b, "add: shapes {} and {}", sa, sb).
#define PEEL_CHECK(cond, ...)                                   \
  do {                                                          \
    if (!(cond)) throw ::peel::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

#define PEEL_FAIL(...) throw ::peel::Error(fmt::format(__VA_ARGS__))

}  // namespace peel
