// Loading a user's eBPF object: libbpf reads the ELF (no kernel load), rte_bpf verifies and JITs
// it. Both report problems only through their logs, so those are captured into the error message.
#include "vswitch/ebpf_classifier.h"

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <rte_bpf.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace qosvisor::vswitch {
namespace {

static_assert(sizeof(bpf_insn) == sizeof(ebpf_insn), "libbpf and DPDK eBPF instructions differ");

// Opcodes checked before DPDK sees the program, to name the cause in words. A map or global
// reference whose relocation was resolved has src_reg set on its 64-bit load; libbpf without a
// kernel load leaves it unresolved (a plain 0 constant), which the map check in Load catches.
constexpr uint8_t kOpLdImm64 = BPF_LD | BPF_IMM | EBPF_DW;
constexpr uint8_t kOpCall = BPF_JMP | EBPF_CALL;
constexpr uint8_t kPseudoCall = 1;  // src_reg of a bpf-to-bpf call (BPF_PSEUDO_CALL)

struct LibbpfLines {
  std::string warnings;
  std::string last_debug;  // libbpf explains some failures (e.g. .rodata) only at debug level
};
// libbpf's messages for the Load in progress on this thread; libbpf's print hook is global and
// takes no user pointer.
thread_local LibbpfLines* libbpf_sink = nullptr;

int CaptureLibbpf(enum libbpf_print_level level, const char* format, va_list args) {
  if (libbpf_sink == nullptr) return 0;
  char line[512];
  const int n = std::vsnprintf(line, sizeof(line), format, args);
  if (n <= 0) return n;
  if (level == LIBBPF_DEBUG) {
    libbpf_sink->last_debug = line;
  } else {
    libbpf_sink->warnings += line;
  }
  return n;
}

// Collects libbpf's messages for the lifetime of the object, then puts the old printer back.
class LibbpfLogCapture {
 public:
  LibbpfLogCapture() : previous_(libbpf_set_print(CaptureLibbpf)) { libbpf_sink = &lines_; }
  ~LibbpfLogCapture() {
    libbpf_sink = nullptr;
    libbpf_set_print(previous_);
  }
  // The warnings, or failing those the last debug line: the one naming what stopped libbpf.
  std::string Text() const {
    return Trim(lines_.warnings.empty() ? lines_.last_debug : lines_.warnings);
  }

  static std::string Trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

 private:
  libbpf_print_fn_t previous_;
  LibbpfLines lines_;
};

// Sends DPDK's log to memory while alive, with the lib.bpf type at least at ERR so the verifier's
// reasons are not filtered out, then restores stream and levels.
class DpdkLogCapture {
 public:
  DpdkLogCapture() {
    previous_stream_ = rte_log_get_stream();
    stream_ = open_memstream(&buffer_, &size_);
    if (stream_ != nullptr) rte_openlog_stream(stream_);
    global_level_ = rte_log_get_global_level();
    if (global_level_ < RTE_LOG_ERR) rte_log_set_global_level(RTE_LOG_ERR);
    // rte_log_register returns the existing id when the type is already registered (by rte_bpf's
    // constructor), without changing its level.
    bpf_type_ = rte_log_register("lib.bpf");
    if (bpf_type_ >= 0) {
      bpf_level_ = rte_log_get_level(static_cast<uint32_t>(bpf_type_));
      if (bpf_level_ >= 0 && bpf_level_ < static_cast<int>(RTE_LOG_ERR)) {
        rte_log_set_level(static_cast<uint32_t>(bpf_type_), RTE_LOG_ERR);
      }
    }
  }
  ~DpdkLogCapture() {
    Stop();
    std::free(buffer_);
  }
  // Restores the previous logging and returns what was logged meanwhile.
  std::string Stop() {
    if (stream_ != nullptr) {
      rte_openlog_stream(previous_stream_);
      std::fclose(stream_);
      stream_ = nullptr;
      if (bpf_type_ >= 0 && bpf_level_ >= 0) {
        rte_log_set_level(static_cast<uint32_t>(bpf_type_), static_cast<uint32_t>(bpf_level_));
      }
      rte_log_set_global_level(global_level_);
      if (buffer_ != nullptr) text_.assign(buffer_, size_);
    }
    return LibbpfLogCapture::Trim(text_);
  }

 private:
  FILE* previous_stream_ = nullptr;
  FILE* stream_ = nullptr;
  char* buffer_ = nullptr;
  size_t size_ = 0;
  uint32_t global_level_ = 0;
  int bpf_type_ = -1;
  int bpf_level_ = -1;
  std::string text_;
};

// DPDK's verifier lines start with "function(0x<handle>) "; a user needs the rest, on one line:
// "loops detected; loop at pc:12 --> pc:6;".
std::string OneLine(const std::string& log) {
  std::string out;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    std::string line = log.substr(start, end - start);
    start = end + 1;
    if (const size_t at = line.find("(0x"); at != std::string::npos) {
      const size_t close = line.find(") ", at);
      if (close != std::string::npos && line.find(' ') > at) line.erase(0, close + 2);
    }
    if (line.empty()) continue;
    if (!out.empty()) out += ' ';
    out += line;
  }
  return out;
}

std::string ErrnoText(int err) {
  char buf[128];
  libbpf_strerror(err < 0 ? -err : err, buf, sizeof(buf));
  return buf;
}

struct ObjectCloser {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};

std::string ProgramList(const bpf_object* obj) {
  std::string list;
  bpf_program* prog = nullptr;
  while ((prog = bpf_object__next_program(obj, prog)) != nullptr) {
    if (!list.empty()) list += ", ";
    list +=
        fmt::format("{} (section {})", bpf_program__name(prog), bpf_program__section_name(prog));
  }
  return list.empty() ? "no programs" : list;
}

bpf_program* FindProgram(const bpf_object* obj, const std::string& wanted) {
  bpf_program* prog = nullptr;
  if (wanted.empty()) return bpf_object__next_program(obj, nullptr);
  while ((prog = bpf_object__next_program(obj, prog)) != nullptr) {
    if (wanted == bpf_program__name(prog)) return prog;
  }
  while ((prog = bpf_object__next_program(obj, prog)) != nullptr) {
    if (wanted == bpf_program__section_name(prog)) return prog;
  }
  return nullptr;
}

// What rte_bpf cannot run, named before it tries: a reason, or empty.
std::string UnsupportedInstruction(const bpf_insn* insns, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (insns[i].code == kOpLdImm64 && insns[i].src_reg != 0) {
      return fmt::format(
          "instruction {} loads the address of a map or of a global/static variable or constant "
          "(.data/.rodata/.bss); qosvisor runs programs without maps or globals: keep values in "
          "locals and read the packet from the context",
          i);
    }
    if (insns[i].code == kOpCall && insns[i].src_reg == kPseudoCall) {
      return fmt::format(
          "instruction {} calls another BPF function; DPDK's rte_bpf has no bpf-to-bpf calls: "
          "declare helpers `static inline __attribute__((always_inline))`",
          i);
    }
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<EbpfClassifier>> EbpfClassifier::Load(const std::string& object_path,
                                                             const std::string& program) {
  const std::string what = fmt::format("eBPF object '{}'", object_path);
  struct stat st {};
  if (stat(object_path.c_str(), &st) != 0) {
    return Status::Error(fmt::format("{}: {}", what, ErrnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) return Status::Error(fmt::format("{}: not a regular file", what));

  std::unique_ptr<bpf_object, ObjectCloser> obj;
  std::string libbpf_log;
  {
    LibbpfLogCapture capture;
    bpf_object* raw = bpf_object__open_file(object_path.c_str(), nullptr);
    const int err = raw == nullptr ? -errno : 0;
    libbpf_log = capture.Text();
    // libbpf's own line says more than its errno (a .rodata failure comes back as ENOENT).
    if (raw == nullptr) {
      return Status::Error(fmt::format(
          "{}: libbpf cannot open it: {}. It must be built with `clang -target bpf -O2 -g -c` "
          "from a program without globals or constant tables (see vswitch/ebpf_abi.h)",
          what, libbpf_log.empty() ? ErrnoText(err) : libbpf_log));
    }
    obj.reset(raw);
  }

  // Globals become maps in libbpf (.data, .rodata, .bss); their relocations are applied only by a
  // kernel load, so rte_bpf would see a null address. Refuse them here, by name.
  std::string maps;
  for (const bpf_map* map = bpf_object__next_map(obj.get(), nullptr); map != nullptr;
       map = bpf_object__next_map(obj.get(), map)) {
    maps += fmt::format("{}'{}'", maps.empty() ? "" : ", ", bpf_map__name(map));
  }
  if (!maps.empty()) {
    return Status::Error(fmt::format(
        "{} refused: it uses maps or global/static variables ({}); qosvisor runs programs with "
        "DPDK's rte_bpf, which has neither: keep state in locals and read the packet from the "
        "context",
        what, maps));
  }

  const bpf_program* prog = FindProgram(obj.get(), program);
  if (prog == nullptr) {
    if (program.empty()) {
      return Status::Error(fmt::format(
          "{}: contains no BPF program; functions left in .text are not programs to libbpf: "
          "declare yours with QV_EBPF_PROGRAM(name) from vswitch/ebpf_abi.h",
          what));
    }
    return Status::Error(fmt::format("{}: no program or section named '{}'; it has: {}", what,
                                     program, ProgramList(obj.get())));
  }

  auto self = std::unique_ptr<EbpfClassifier>(new EbpfClassifier());
  self->program_name_ = bpf_program__name(prog);
  self->section_name_ = bpf_program__section_name(prog);
  const std::string which = fmt::format("eBPF program '{}' (section {}) in '{}'",
                                        self->program_name_, self->section_name_, object_path);

  const bpf_insn* insns = bpf_program__insns(prog);
  const size_t count = bpf_program__insn_cnt(prog);
  if (insns == nullptr || count == 0) {
    return Status::Error(fmt::format("{}: the program is empty", which));
  }
  if (std::string reason = UnsupportedInstruction(insns, count); !reason.empty()) {
    return Status::Error(fmt::format("{} refused: {}", which, reason));
  }

  rte_bpf_prm prm{};
  // SAFETY: struct bpf_insn (Linux UAPI) and struct ebpf_insn (DPDK) are both the 8-byte eBPF
  // instruction {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm} (size asserted above), and
  // rte_bpf_load copies the array, so it need not outlive `obj`.
  prm.ins = reinterpret_cast<const ebpf_insn*>(insns);
  prm.nb_ins = static_cast<uint32_t>(count);
  prm.prog_arg.type = RTE_BPF_ARG_PTR;
  prm.prog_arg.size = sizeof(EbpfContext);

  DpdkLogCapture capture;
  rte_bpf* bpf = rte_bpf_load(&prm);
  const int load_errno = rte_errno;
  std::string dpdk_log = capture.Stop();
  if (bpf == nullptr) {
    return Status::Error(fmt::format(
        "{} refused by DPDK's eBPF verifier ({}): {} -- programs may not loop, call helpers or "
        "read outside the context (see vswitch/ebpf_abi.h)",
        which, ErrnoText(load_errno), dpdk_log.empty() ? "no reason logged" : OneLine(dpdk_log)));
  }
  self->bpf_ = bpf;
  self->instruction_count_ = static_cast<uint32_t>(count);

  rte_bpf_jit jit{};
  if (rte_bpf_get_jit(bpf, &jit) == 0 && jit.func != nullptr) {
    self->jit_ = jit.func;
  } else {
    // Still correct, only slower; say so where an operator will look.
    RTE_LOG(WARNING, USER1,
            "qosvisor: %s has no JIT code; running it with the rte_bpf interpreter (~10x "
            "slower)\n",
            which.c_str());
  }
  return self;
}

EbpfClassifier::~EbpfClassifier() {
  if (bpf_ != nullptr) rte_bpf_destroy(bpf_);
}

uint64_t EbpfClassifier::RunInterpreted(EbpfContext& ctx) const { return rte_bpf_exec(bpf_, &ctx); }

}  // namespace qosvisor::vswitch
