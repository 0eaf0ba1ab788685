// Writes the seed corpus of every fuzz target, tests/fuzz/corpus/<target>/, with peel's own
// writers where it has them (encode_idx, write_state), so each seed is a
// known-good file that the reader accepts; the seeds are small on purpose (the fuzzer grows them).
// Run by `scripts/fuzz --make-seeds`; the output is committed.
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>

#include "datasets/formats/cifar.h"
#include "datasets/formats/fashion_json.h"
#include "datasets/formats/idx.h"
#include "nn/module.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"

using namespace peel;
namespace fs = std::filesystem;

namespace {

io::Bytes gzip(const io::Bytes& raw) {
  z_stream zs{};
  PEEL_CHECK(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
  io::Bytes out(deflateBound(&zs, raw.size()) + 32);
  zs.next_in = const_cast<uint8_t*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  PEEL_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write(const fs::path& file, const io::Bytes& bytes) {
  fs::create_directories(file.parent_path());
  io::write_file_atomic(file.string(), bytes);
}
void write(const fs::path& file, const std::string& text) { write(file, io::Bytes(text.begin(), text.end())); }

void idx_seeds(const fs::path& dir) {
  io::Bytes pixels(3 * 4 * 5);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 13);
  const io::Bytes images = data::encode_idx({3, 4, 5}, pixels);
  write(dir / "images.idx", images);
  write(dir / "images.idx.gz", gzip(images));
  write(dir / "labels.idx", data::encode_idx({4}, io::Bytes{1, 2, 3, 9}));
}

void cifar_seeds(const fs::path& dir) {
  io::Bytes batch;
  for (int i = 0; i < 2; ++i) {
    batch.push_back(static_cast<uint8_t>(i + 3));
    for (int p = 0; p < 3072; ++p) batch.push_back(static_cast<uint8_t>(p * 7 + i));
  }
  write(dir / "two_records.bin", batch);
}

std::string fashion_class_json(int images, bool empty_entry) {
  std::string text = "{\"data\":[";
  for (int img = 0; img < images; ++img) {
    text += img ? ",[" : "[";
    for (int i = 0; i < 784; ++i) text += (i ? "," : "") + std::to_string((i * 7 + img) % 256);
    text += "]";
  }
  if (empty_entry) text += ",[]";
  return text + "]}";
}

void fashion_seeds(const fs::path& dir) {
  write(dir / "two_images.json", fashion_class_json(2, true));
  write(dir / "one_image.json", fashion_class_json(1, false));
}

// A version-1 file (before the CRCs), laid out by hand since peel writes version 2 only: magic,
// version, entry count, then per entry name length, name, rank, dims, float32 values.
io::Bytes state_v1() {
  std::string out = "PEELSTAT";
  auto put = [&](auto value) { out.append(reinterpret_cast<const char*>(&value), sizeof value); };
  put(uint32_t{1});
  put(uint64_t{2});
  put(uint32_t{6});
  out += "weight";
  put(uint32_t{2});
  put(int64_t{2});
  put(int64_t{3});
  for (int i = 0; i < 6; ++i) put(static_cast<float>(i) * 0.5f);
  put(uint32_t{4});
  out += "step";
  put(uint32_t{0});  // a scalar: rank 0, one value
  put(7.0f);
  return io::Bytes(out.begin(), out.end());
}

void state_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  nn::write_state((dir / "v2.peel").string(), {{"fc.weight", Tensor::from_vector({1, -2, 3, -4, 5, -6}, {2, 3})},
                                               {"fc.bias", Tensor::from_vector({0.5f, -0.5f}, {2})},
                                               {"bn.num_batches_tracked", Tensor::scalar(3)},
                                               {"empty", Tensor::zeros({0, 4})}});
  nn::write_state((dir / "v2_empty.peel").string(), {});
  write(dir / "v1.peel", state_v1());
}

// As write_metrics_csv writes it (%.17g, "nan"), spelled out so that this program needs only the
// libraries below experiments/ and is built with the first fuzz targets.
void metrics_seeds(const fs::path& dir) {
  write(dir / "three_epochs.csv", std::string("epoch,train_loss,test_accuracy,nc1\n"
                                              "1,2.3025850929940459,0.10000000000000001,nan\n"
                                              "2,0.5,0.8125,0.001\n"
                                              "3,0.25,0.90000000000000002,2.4999999999999999e-07\n"));
  write(dir / "header_only.csv", std::string("epoch,train_loss\n"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds CORPUS_DIR (writes CORPUS_DIR/<target>/...)\n";
    return 2;
  }
  const fs::path root = argv[1];
  idx_seeds(root / "fuzz_idx");
  cifar_seeds(root / "fuzz_cifar");
  fashion_seeds(root / "fuzz_fashion_json");
  state_seeds(root / "fuzz_state");
  metrics_seeds(root / "fuzz_metrics_csv");
  std::cout << "fuzz_make_seeds: wrote the seeds under " << root.string() << "\n";
  return 0;
}
