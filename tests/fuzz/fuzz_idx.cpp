// libFuzzer target: the IDX reader of MNIST and Fashion-MNIST (datasets/formats/idx.h), raw or
// gzipped, and the image/label pairing checks applied to what it accepts.
#include <algorithm>

#include "datasets/formats/idx.h"
#include "tests/fuzz/fuzz.h"

using namespace peel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::reject_errors([&] {
    const std::span<const uint8_t> raw = fuzz::bytes_of(data, size);
    // A small output limit, so that a gzip bomb is a rejection and not an out-of-memory report.
    const data::IdxArray a = io::is_gzip(raw) ? data::parse_idx(io::gunzip(raw, "fuzz.idx.gz", 1 << 20), "fuzz.idx")
                                              : data::parse_idx(raw, "fuzz.idx");
    if (a.dims.size() == 1 && a.dims[0] <= 4096) {  // labels: pair them with as many 1x1 images
      data::IdxArray images{{a.dims[0], 1, 1}, io::Bytes(static_cast<size_t>(a.dims[0]))};
      data::idx_to_images(std::move(images), "images", a, "fuzz.idx", 10);
    } else if (a.dims.size() == 3 && a.dims[0] <= 4096) {  // images: pair them with labels 0, 1, ...
      io::Bytes labels(static_cast<size_t>(a.dims[0]));
      for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
      data::idx_to_images(a, "fuzz.idx", data::IdxArray{{a.dims[0]}, labels}, "labels", 10);
    }
  });
}
