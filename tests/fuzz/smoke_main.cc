// Without libFuzzer (regular builds), runs a fuzz target over seeds and many random mutations of
// them, so every `ctest` run exercises the targets a little. Usage: fuzz_x [iterations] [seed dir]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::vector<std::vector<uint8_t>> seeds;
  if (argc > 2) {
    for (const auto& entry : std::filesystem::directory_iterator(argv[2])) {
      std::ifstream in(entry.path(), std::ios::binary);
      seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  if (seeds.empty()) seeds.push_back({});
  std::mt19937_64 rng(12345);
  for (long i = 0; i < iterations; ++i) {
    std::vector<uint8_t> input = seeds[i % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0:
          if (!input.empty())
            input[rng() % input.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          input.insert(input.begin() + (input.empty() ? 0 : rng() % input.size()), rng());
          break;
        case 2:
          if (!input.empty()) input.erase(input.begin() + rng() % input.size());
          break;
        case 3:
          input.resize(rng() % (input.size() + 2));
          break;
      }
    }
    // An exactly sized heap copy lets ASan see a read one byte past the end.
    std::vector<uint8_t> exact(input);
    LLVMFuzzerTestOneInput(exact.data(), exact.size());
  }
  std::printf("%ld inputs from %zu seed(s): no crash\n", iterations, seeds.size());
  return 0;
}
