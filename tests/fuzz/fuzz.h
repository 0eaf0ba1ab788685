// What every libFuzzer target of tests/fuzz shares: the contract that a reader, given any bytes,
// either returns or throws peel::Error. A peel::Error is a clean rejection; anything else (another
// exception, which ends the process through std::terminate, or a sanitizer report) is a crash that
// libFuzzer keeps as a reproducer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "tensor/error.h"

namespace peel::fuzz {

template <class Read>
int reject_errors(Read&& read) {
  try {
    read();
  } catch (const Error&) {  // the reader refused the input, as it should refuse bad files
  }
  return 0;
}

inline std::span<const uint8_t> bytes_of(const uint8_t* data, size_t size) { return {data, size}; }
inline std::string text_of(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

}  // namespace peel::fuzz
