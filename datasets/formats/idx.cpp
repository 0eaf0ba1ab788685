#include "datasets/formats/idx.h"

#include <utility>

#include "tensor/error.h"

namespace peel::data {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int64_t kMaxDims = 4;

uint32_t read_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

}  // namespace

IdxArray parse_idx(std::span<const uint8_t> bytes, const std::string& name) {
  const int64_t size = static_cast<int64_t>(bytes.size());
  PEEL_CHECK(size >= 4, "{}: truncated IDX header: the 4-byte magic needs bytes 0..3, the file has {} bytes", name,
             size);
  PEEL_CHECK(bytes[0] == 0 && bytes[1] == 0,
             "{}: bad IDX magic at byte offset 0: expected 00 00, got {:02x} {:02x} (not an IDX file?)", name, bytes[0],
             bytes[1]);
  PEEL_CHECK(bytes[2] == kTypeUnsignedByte,
             "{}: IDX type code 0x{:02x} at byte offset 2 is not supported (only 0x08, unsigned byte)", name, bytes[2]);
  const int64_t ndims = bytes[3];
  PEEL_CHECK(ndims >= 1 && ndims <= kMaxDims, "{}: IDX dimension count {} at byte offset 3 is outside 1..{}", name,
             ndims, kMaxDims);
  const int64_t header = 4 + 4 * ndims;
  PEEL_CHECK(size >= header, "{}: truncated IDX header: {} dimensions need bytes 4..{}, the file has {} bytes", name,
             ndims, header - 1, size);
  IdxArray out;
  int64_t count = 1;
  bool too_big = false;
  for (int64_t d = 0; d < ndims; ++d) {
    const int64_t dim = read_be32(bytes.data() + 4 + 4 * d);
    out.dims.push_back(dim);
    // Sizes beyond the file cannot be satisfied; stop multiplying before int64 could overflow.
    if (count > 0 && dim > 0 && count > (int64_t{1} << 62) / dim)
      too_big = true;
    else
      count *= dim;
  }
  PEEL_CHECK(!too_big && header + count <= size,
             "{}: IDX data truncated: dimensions {} need {} bytes from byte offset {}, but the file ends at byte "
             "offset {}",
             name, out.dims, too_big ? std::string("more than 2^62") : std::to_string(count), header, size);
  PEEL_CHECK(header + count == size, "{}: {} unexpected trailing bytes after the IDX data, from byte offset {}", name,
             size - header - count, header + count);
  out.values.assign(bytes.begin() + header, bytes.end());
  return out;
}

IdxArray decode_idx(std::span<const uint8_t> raw, const std::string& path) {
  if (!io::is_gzip(raw)) return parse_idx(raw, path);
  const Bytes decoded = io::gunzip(raw, path);
  return parse_idx(decoded, path + " (gzip-decoded)");
}

IdxArray read_idx(const std::string& path) { return decode_idx(io::read_file(path), path); }

Bytes encode_idx(const std::vector<int64_t>& dims, std::span<const uint8_t> values) {
  PEEL_CHECK(!dims.empty() && static_cast<int64_t>(dims.size()) <= kMaxDims,
             "encode_idx: {} dimensions, IDX files here have 1..{}", dims.size(), kMaxDims);
  int64_t count = 1;
  for (int64_t d : dims) {
    PEEL_CHECK(d >= 0 && d <= UINT32_MAX, "encode_idx: dimension {} does not fit in uint32", d);
    count *= d;
  }
  PEEL_CHECK(count == static_cast<int64_t>(values.size()), "encode_idx: dimensions {} hold {} values, got {}", dims,
             count, values.size());
  Bytes out = {0, 0, kTypeUnsignedByte, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  out.insert(out.end(), values.begin(), values.end());
  return out;
}

void write_idx(const std::string& path, const std::vector<int64_t>& dims, std::span<const uint8_t> values) {
  io::write_file_atomic(path, encode_idx(dims, values));
}

RawImages idx_to_images(IdxArray images, const std::string& images_name, const IdxArray& labels,
                        const std::string& labels_name, int64_t num_classes) {
  PEEL_CHECK(images.dims.size() == 3, "{}: an images file needs 3 dimensions (count, rows, columns), got {}",
             images_name, images.dims);
  PEEL_CHECK(labels.dims.size() == 1, "{}: a labels file needs 1 dimension (count), got {}", labels_name, labels.dims);
  PEEL_CHECK(images.dims[0] == labels.dims[0], "{} holds {} images but {} holds {} labels", images_name, images.dims[0],
             labels_name, labels.dims[0]);
  PEEL_CHECK(images.dims[1] > 0 && images.dims[2] > 0, "{}: image size {}x{} is empty", images_name, images.dims[1],
             images.dims[2]);
  RawImages out;
  out.count = images.dims[0];
  out.channels = 1;
  out.height = images.dims[1];
  out.width = images.dims[2];
  out.pixels = std::move(images.values);
  out.labels.resize(labels.values.size());
  const int64_t header = 4 + 4 * 1;
  for (size_t i = 0; i < labels.values.size(); ++i) {
    const int64_t label = labels.values[i];
    PEEL_CHECK(label < num_classes, "{}: label {} at byte offset {} is outside [0, {})", labels_name, label,
               header + static_cast<int64_t>(i), num_classes);
    out.labels[i] = label;
  }
  return out;
}

RawImages read_idx_dataset(const std::string& images_path, const std::string& labels_path, int64_t num_classes) {
  return idx_to_images(read_idx(images_path), images_path, read_idx(labels_path), labels_path, num_classes);
}

}  // namespace peel::data
