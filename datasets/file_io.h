// Moved: peel's file I/O is tensor/io/file_io.h, namespace peel::io, so that nn/ and every other
// part write through the same durable atomic writer. This header only keeps the old names for
// code not yet switched (experiments/cli/lpm.cpp); delete it once nothing includes it.
#pragma once

#include "tensor/io/file_io.h"

namespace peel::data {

using io::Bytes;
using io::gunzip;
using io::is_gzip;
using io::read_file;
using io::read_maybe_gzip;
using io::sha256_file;
using io::sha256_hex;
using io::write_file_atomic;

}  // namespace peel::data
