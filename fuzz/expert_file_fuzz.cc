// The packed expert file's header and index (io/expert_file.h,
// ExpertFile::Open; format in io/FORMAT.md). The input is the whole file,
// written to a memfd and opened through /proc (Open only takes a path).
//
// Both checksums guard everything behind them, so a mutated input would
// almost never get past the header. Each input is therefore opened twice:
// as it is (the checksum checks themselves), then with the index and header
// checksums recomputed over the mutated bytes, which lets the fuzzer reach
// the field, bounds and slot checks.
//
// Versions 1 to 3 (the seeds hold all three). Asserts beyond "no crash": an
// accepted file's layout is inside FORMAT.md's ranges, and every extent Find
// returns is a whole aligned slot inside the file, holding a bundle whose
// length is what its own dtypes give (exactly expert_bytes in version 1, at
// most that from version 2) and whose matrices Bundle lays out inside it;
// Find and Bundle refuse out-of-range experts; Verify on the bundle's own
// bytes answers OK or DataLoss.

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "fuzz/fuzz_util.h"
#include "io/expert_file.h"

namespace {

namespace io = expertd::io;

// Offsets from io/FORMAT.md.
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kOffIndexBytes = 72;
constexpr size_t kOffIndexChecksum = 80;
constexpr size_t kOffHeaderChecksum = kHeaderBytes - 8;

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}
void StoreU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t Xxh64Of(const uint8_t* p, size_t n) {
  return io::Xxh64(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(p), n));
}

void OpenAndCheck(expertd::fuzz::MemoryFile& memory_file, const uint8_t* data, size_t size) {
  auto opened = io::ExpertFile::Open(memory_file.Write(data, size), std::nullopt);
  if (!opened.ok()) return;
  const io::ExpertFile& file = **opened;
  const io::ExpertFileLayout& l = file.layout();
  FUZZ_CHECK(file.version() >= 1 && file.version() <= 3);
  FUZZ_CHECK(expertd::DTypeBlockBytes(l.dtypes.gate) > 0 && expertd::DTypeBlockBytes(l.dtypes.up) > 0 &&
             expertd::DTypeBlockBytes(l.dtypes.down) > 0);
  FUZZ_CHECK(file.version() >= 2 || l.dtypes.uniform());
  FUZZ_CHECK(l.num_layers >= 1 && l.num_layers <= (1u << 16));
  FUZZ_CHECK(l.num_experts >= 1 && l.num_experts <= (1u << 16));
  FUZZ_CHECK(uint64_t{l.num_layers} * l.num_experts <= (uint64_t{1} << 24));
  FUZZ_CHECK(l.hidden_size >= 1 && l.hidden_size <= (1u << 20));
  FUZZ_CHECK(l.intermediate_size >= 1 && l.intermediate_size <= (1u << 20));
  FUZZ_CHECK(l.alignment >= 4096 && (l.alignment & (l.alignment - 1)) == 0);
  FUZZ_CHECK(l.slot_bytes() >= l.expert_bytes() && l.slot_bytes() % l.alignment == 0);

  for (int layer = 0; layer < static_cast<int>(l.num_layers); ++layer) {
    for (int expert = 0; expert < static_cast<int>(l.num_experts); ++expert) {
      absl::StatusOr<io::ExpertExtent> extent = file.Find(layer, expert);
      if (!extent.ok()) {
        FUZZ_CHECK(absl::IsNotFound(extent.status()));
        continue;
      }
      FUZZ_CHECK(extent->length <= l.expert_bytes());
      FUZZ_CHECK(file.version() >= 2 || (extent->length == l.expert_bytes() && extent->dtypes == l.dtypes));
      absl::StatusOr<io::BundleLayout> bundle_layout = file.Bundle(layer, expert);
      FUZZ_CHECK(bundle_layout.ok());
      FUZZ_CHECK(bundle_layout->dtypes() == extent->dtypes && bundle_layout->bytes == extent->length);
      FUZZ_CHECK(bundle_layout->down.offset_bytes + bundle_layout->down.size_bytes == extent->length);
      FUZZ_CHECK(extent->offset % l.alignment == 0 && extent->offset >= kHeaderBytes);
      FUZZ_CHECK(extent->offset <= size && l.slot_bytes() <= size - extent->offset);
      const auto bundle = absl::MakeConstSpan(reinterpret_cast<const std::byte*>(data) + extent->offset,
                                              extent->length);
      const absl::Status verified = file.Verify(layer, expert, bundle);
      FUZZ_CHECK(verified.ok() || absl::IsDataLoss(verified));
    }
  }
  FUZZ_CHECK(absl::IsInvalidArgument(file.Find(-1, 0).status()));
  FUZZ_CHECK(absl::IsInvalidArgument(file.Bundle(-1, 0).status()));
  FUZZ_CHECK(absl::IsInvalidArgument(file.Find(0, static_cast<int>(l.num_experts)).status()));
  FUZZ_CHECK(absl::IsInvalidArgument(file.Find(static_cast<int>(l.num_layers), 0).status()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static expertd::fuzz::MemoryFile memory_file;  // one per run: see MemoryFile
  OpenAndCheck(memory_file, data, size);
  if (size < kHeaderBytes) return 0;

  std::vector<uint8_t> repaired(data, data + size);
  const uint64_t index_bytes = LoadU64(&repaired[kOffIndexBytes]);
  if (index_bytes <= size - kHeaderBytes) {
    StoreU64(&repaired[kOffIndexChecksum], Xxh64Of(&repaired[kHeaderBytes], index_bytes));
  }
  StoreU64(&repaired[kOffHeaderChecksum], Xxh64Of(repaired.data(), kOffHeaderChecksum));
  if (std::memcmp(repaired.data(), data, size) != 0) OpenAndCheck(memory_file, repaired.data(), size);
  return 0;
}
