// Expert-load bandwidth of the readers against fio (DESIGN.md §4: expert loads
// at >= 90% of what fio measures for the same file, block size and depth).
//
// Reads random whole experts with O_DIRECT at several queue depths through the
// io_uring reader and the pread pool, then runs fio's io_uring engine with
// bs = chunk_bytes and the same iodepth on the same file, and prints the ratio.
//
//   io_bench [--file PATH] [--size-gib 2] [--expert-bytes 12582912]
//            [--chunk-bytes 524288] [--depths 1,4,16,32] [--seconds 2] [--rounds 3]
// Without --file a scratch file of random bytes is written under --dir and
// removed at exit. A --file that is a packed expert file (io/FORMAT.md) is read
// by its index; any other file as back-to-back slots of --expert-bytes.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/expert_reads.h"
#include "io/aligned_buffer.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace {

using namespace expertd::io;

constexpr uint64_t kPage = 4096;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Writes `bytes` of incompressible data, so a thin-provisioned or compressing
// device cannot serve reads from nothing.
bool WriteScratchFile(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "cannot create %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  std::vector<uint64_t> block((8u << 20) / 8);
  std::mt19937_64 rng(1);
  bool ok = true;
  for (uint64_t offset = 0; offset < bytes && ok;) {
    for (auto& w : block) w = rng();
    const uint64_t n = std::min<uint64_t>(block.size() * 8, bytes - offset);
    ok = ::pwrite(fd, block.data(), n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n);
    offset += n;
  }
  if (!ok || ::fsync(fd) != 0) {
    std::fprintf(stderr, "cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    ok = false;
  }
  ::close(fd);
  return ok;
}

// Drops the file's pages from the page cache so no read is served from DRAM
// (O_DIRECT bypasses the cache anyway; this covers the file's creation).
void DropCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// fio's read bandwidth in bytes per second, or a negative value on failure.
double RunFio(const std::string& path, uint64_t file_bytes, uint64_t block_bytes, int depth, double seconds) {
  const std::string command = "fio --name=expertd --filename=" + path +
                              " --rw=randread --ioengine=io_uring --direct=1 --bs=" + std::to_string(block_bytes) +
                              " --iodepth=" + std::to_string(depth) + " --size=" + std::to_string(file_bytes) +
                              " --runtime=" + std::to_string(static_cast<long>(seconds * 1000)) + "ms" +
                              " --time_based --norandommap --randrepeat=0 --numjobs=1 --output-format=json 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, n);
  if (::pclose(pipe) != 0) return -1;
  // fio may print notes before the JSON document.
  const size_t brace = output.find('{');
  if (brace == std::string::npos) return -1;
  auto json = nlohmann::json::parse(output.substr(brace), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("jobs") || json["jobs"].empty()) return -1;
  return json["jobs"][0]["read"].value("bw_bytes", -1.0);
}

bool HaveFio() { return std::system("command -v fio >/dev/null 2>&1") == 0; }

}  // namespace

int main(int argc, char** argv) {
  std::string file;
  std::string dir = "/var/tmp";
  double size_gib = 2;
  uint64_t expert_bytes = uint64_t{3} * 2048 * 1024 * 2;  // one OLMoE bf16 expert: gate, up, down
  uint64_t chunk_bytes = 512 * 1024;
  std::vector<int> depths = {1, 4, 16, 32};
  double seconds = 2;
  int rounds = 3;
  bool run_fio = true;
  bool verbose = false;
  CLI::App app{"expert-load bandwidth of the io_uring and pread readers against fio"};
  app.add_option("--file", file, "file to read (created with --size-gib if missing); default: a scratch file");
  app.add_option("--dir", dir, "where the scratch file goes")->capture_default_str();
  app.add_option("--size-gib", size_gib, "size of a created file in GiB")->capture_default_str();
  app.add_option("--expert-bytes", expert_bytes, "bytes of one expert")->capture_default_str();
  app.add_option("--chunk-bytes", chunk_bytes, "reader split size = fio block size")->capture_default_str();
  app.add_option("--depths", depths, "queue depths")->delimiter(',')->capture_default_str();
  app.add_option("--seconds", seconds, "per measurement")->capture_default_str();
  app.add_option("--rounds", rounds, "measurements per reader and depth; the best counts")->capture_default_str();
  app.add_flag("!--no-fio", run_fio, "skip the fio comparison");
  app.add_flag("--verbose", verbose, "print every measurement, not just the best");
  CLI11_PARSE(app, argc, argv);
  if (chunk_bytes == 0 || chunk_bytes % kPage != 0) {
    std::fprintf(stderr, "--chunk-bytes must be a positive multiple of 4096\n");
    return 2;
  }

  // The file and the experts in it.
  bool scratch = false;
  if (file.empty()) {
    file = dir + "/expertd_io_bench." + std::to_string(::getpid()) + ".bin";
    scratch = true;
  }
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    const uint64_t bytes = AlignUp(static_cast<uint64_t>(size_gib * (1ull << 30)), kPage);
    std::printf("writing %.2f GiB to %s ...\n", bytes / double(1ull << 30), file.c_str());
    std::fflush(stdout);
    if (!WriteScratchFile(file, bytes)) return 1;
  }
  const uint64_t file_bytes = std::filesystem::file_size(file, ec);
  std::vector<expertd::bench::ExpertRead> experts;
  if (auto packed = ExpertFile::Open(file, std::nullopt); packed.ok()) {
    experts = expertd::bench::SlotReads(**packed);
    expert_bytes = (*packed)->layout().expert_bytes();
    std::printf("%s: packed expert file, %zu experts\n", file.c_str(), experts.size());
  } else {
    const uint64_t slot = AlignUp(expert_bytes, kPage);
    for (uint64_t offset = 0; offset + slot <= file_bytes; offset += slot) experts.push_back({offset, slot});
  }
  if (experts.empty()) {
    std::fprintf(stderr, "%s (%lu bytes) holds no expert of %lu bytes\n", file.c_str(),
                 static_cast<unsigned long>(file_bytes), static_cast<unsigned long>(expert_bytes));
    return 1;
  }
  const uint64_t slot_bytes = experts[0].length;
  std::printf("file %s: %.2f GiB, %zu experts of %.2f MiB, chunk %lu KiB, best of %d runs of %.1f s\n",
              file.c_str(), file_bytes / double(1ull << 30), experts.size(), expert_bytes / double(1 << 20),
              static_cast<unsigned long>(chunk_bytes / 1024), rounds, seconds);

  if (run_fio && !HaveFio()) {
    std::printf("fio is not installed: `apt-get install fio` (Debian) to compare; skipping\n");
    run_fio = false;
  }

  // Per depth, `rounds` rounds of uring, pread and fio back to back, keeping
  // each one's best: a shared or virtual disk drifts over seconds, and
  // interleaving puts the three under the same conditions.
  struct Row {
    int depth;
    double uring = -1, pread = -1, fio = -1;
  };
  std::vector<Row> rows;
  for (int depth : depths) {
    Row row{depth};
    // Experts in flight: enough whole experts to keep `depth` chunks queued.
    const int in_flight =
        static_cast<int>(std::max<uint64_t>(2, (static_cast<uint64_t>(depth) * chunk_bytes + slot_bytes - 1) /
                                                   slot_bytes + 1));
    std::vector<AlignedBuffer> buffers;
    std::vector<iovec> iovecs;
    for (int i = 0; i < in_flight; ++i) {
      auto b = AlignedBuffer::Allocate(slot_bytes);
      if (!b.ok()) {
        std::fprintf(stderr, "%s\n", b.status().ToString().c_str());
        return 1;
      }
      iovecs.push_back({b->data(), b->size()});
      buffers.push_back(std::move(*b));
    }
    for (int round = 0; round < rounds; ++round) {
      for (bool uring : {true, false}) {
        ReaderOptions options;
        options.path = file;
        options.direct_io = true;
        options.queue_depth = depth;
        options.pread_threads = depth;
        options.chunk_bytes = chunk_bytes;
        auto reader = uring ? OpenUringReader(options) : OpenPreadReader(options);
        if (!reader.ok()) {
          std::fprintf(stderr, "%s reader: %s\n", uring ? "uring" : "pread", reader.status().ToString().c_str());
          continue;
        }
        // The cache's slot arena is registered the same way (READ_FIXED).
        if (auto s = (*reader)->RegisterBuffers(iovecs); !s.ok()) {
          std::fprintf(stderr, "register buffers: %s\n", s.ToString().c_str());
        }
        DropCache(file);
        std::string error;
        const double bw = expertd::bench::MeasureExpertReads(**reader, experts, buffers, seconds, &error);
        if (!error.empty()) {
          std::fprintf(stderr, "%s reader at depth %d: %s\n", uring ? "uring" : "pread", depth, error.c_str());
          continue;
        }
        if (verbose) std::printf("  depth %d round %d: %s %.2f GB/s\n", depth, round, uring ? "uring" : "pread", bw / 1e9);
        double& best = uring ? row.uring : row.pread;
        best = std::max(best, bw);
      }
      if (run_fio) {
        DropCache(file);
        const double bw = RunFio(file, file_bytes, chunk_bytes, depth, seconds);
        if (bw < 0) std::fprintf(stderr, "fio at depth %d failed\n", depth);
        if (verbose) std::printf("  depth %d round %d: fio %.2f GB/s\n", depth, round, bw / 1e9);
        row.fio = std::max(row.fio, bw);
      }
    }
    rows.push_back(row);
    std::printf("depth %2d: uring %6.2f GB/s, pread %6.2f GB/s, fio %6.2f GB/s\n", depth, row.uring / 1e9,
                row.pread / 1e9, row.fio / 1e9);
    std::fflush(stdout);
  }

  std::printf("\n%-6s %12s %12s %12s %12s %12s\n", "depth", "uring GB/s", "pread GB/s", "fio GB/s", "uring/fio",
              "pread/fio");
  for (const Row& row : rows) {
    auto gbs = [](double v) { return v < 0 ? std::string("-") : std::to_string(v / 1e9).substr(0, 6); };
    auto ratio = [&](double v) {
      return v < 0 || row.fio <= 0 ? std::string("-") : std::to_string(v / row.fio).substr(0, 5);
    };
    std::printf("%-6d %12s %12s %12s %12s %12s\n", row.depth, gbs(row.uring).c_str(), gbs(row.pread).c_str(),
                gbs(row.fio).c_str(), ratio(row.uring).c_str(), ratio(row.pread).c_str());
  }
  if (run_fio) std::printf("goal: uring/fio >= 0.9 at every depth (DESIGN.md §4)\n");

  if (scratch) std::filesystem::remove(file, ec);
  return 0;
}
