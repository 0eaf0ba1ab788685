#include "datasets/formats/fashion_json.h"

#include <algorithm>

#include "tensor/error.h"
#include "tensor/random.h"

namespace peel::data {
namespace {

constexpr int64_t kSide = 28;
constexpr int64_t kPixels = kSide * kSide;

// A strict reader for exactly the shape {"data":[[ints],[ints],...]}; anything else is an error
// naming the byte offset. Far faster and smaller than a general JSON DOM for 150 MB of integers.
class Reader {
 public:
  Reader(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() {
    skip_space();
    PEEL_CHECK(pos_ < s_.size(), "{}: JSON ends early at byte offset {}", name_, pos_);
    return s_[pos_];
  }
  void expect(char c) {
    const char got = peek();
    PEEL_CHECK(got == c, "{}: expected '{}' at byte offset {}, found '{}'", name_, c, pos_, printable(got));
    ++pos_;
  }
  void expect_word(std::string_view w) {
    skip_space();
    PEEL_CHECK(s_.substr(pos_, w.size()) == w, "{}: expected {} at byte offset {}", name_, w, pos_);
    pos_ += w.size();
  }
  // A non-negative integer written as plain digits, at most 255.
  uint8_t pixel() {
    skip_space();
    const size_t start = pos_;
    int value = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9' && pos_ - start < 4) {
      value = value * 10 + (s_[pos_] - '0');
      ++pos_;
    }
    PEEL_CHECK(pos_ > start, "{}: expected a pixel value (integer 0..255) at byte offset {}, found '{}'", name_, start,
               start < s_.size() ? printable(s_[start]) : std::string("end of file"));
    PEEL_CHECK(value <= 255 && pos_ - start <= 3, "{}: pixel value at byte offset {} is outside 0..255", name_, start);
    return static_cast<uint8_t>(value);
  }
  size_t pos() const { return pos_; }

 private:
  static std::string printable(char c) {
    return (c >= 32 && c < 127) ? std::string(1, c) : fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
  }
  std::string_view s_;
  const std::string& name_;
  size_t pos_ = 0;
};

}  // namespace

ClassImages parse_fashion_class_json(std::string_view text, const std::string& name) {
  Reader r(text, name);
  ClassImages out;
  r.expect('{');
  r.expect_word("\"data\"");
  r.expect(':');
  r.expect('[');
  if (r.peek() == ']') {
    r.expect(']');
  } else {
    for (;;) {
      const size_t image_start = r.pos();
      r.expect('[');
      if (r.peek() == ']') {
        r.expect(']');
        ++out.empty_entries;
      } else {
        const size_t first = out.pixels.size();
        for (;;) {
          PEEL_CHECK(static_cast<int64_t>(out.pixels.size() - first) < kPixels,
                     "{}: the image starting at byte offset {} has more than {} pixels", name, image_start, kPixels);
          out.pixels.push_back(r.pixel());
          if (r.peek() == ']') break;
          r.expect(',');
        }
        r.expect(']');
        const int64_t n = static_cast<int64_t>(out.pixels.size() - first);
        PEEL_CHECK(n == kPixels, "{}: the image starting at byte offset {} has {} pixels, expected {}", name,
                   image_start, n, kPixels);
        ++out.count;
      }
      if (r.peek() == ']') break;
      r.expect(',');
    }
    r.expect(']');
  }
  r.expect('}');
  r.skip_space();
  PEEL_CHECK(r.at_end(), "{}: unexpected data after the JSON object at byte offset {}", name, r.pos());
  return out;
}

TrainTest fashion_split(const std::vector<ClassImages>& classes, int64_t train_per_class, int64_t images_per_class,
                        uint64_t seed) {
  const int64_t num_classes = static_cast<int64_t>(classes.size());
  PEEL_CHECK(num_classes > 0 && train_per_class >= 0 && train_per_class <= images_per_class,
             "fashion_split: {} classes, {} of {} images per class for training", num_classes, train_per_class,
             images_per_class);
  for (int64_t k = 0; k < num_classes; ++k)
    PEEL_CHECK(classes[k].count == images_per_class, "fashion_split: class {} has {} images, expected {}", k,
               classes[k].count, images_per_class);
  const int64_t test_per_class = images_per_class - train_per_class;
  Generator gen(seed);
  // Builds one split: position j takes the class-major item order[j] = (class, index within class).
  auto build = [&](int64_t per_class, int64_t offset_in_class) {
    RawImages out;
    out.count = per_class * num_classes;
    out.channels = 1;
    out.height = out.width = kSide;
    out.pixels.resize(static_cast<size_t>(out.count * kPixels));
    out.labels.resize(static_cast<size_t>(out.count));
    const std::vector<int64_t> order = gen.permutation(out.count);
    for (int64_t j = 0; j < out.count; ++j) {
      const int64_t k = order[j] / per_class, i = offset_in_class + order[j] % per_class;
      std::copy_n(classes[k].pixels.data() + i * kPixels, kPixels, out.pixels.data() + j * kPixels);
      out.labels[j] = k;
    }
    return out;
  };
  TrainTest split;
  split.train = build(train_per_class, 0);
  split.test = build(test_per_class, train_per_class);
  return split;
}

}  // namespace peel::data
