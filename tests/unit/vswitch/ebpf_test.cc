// The eBPF hook: the example programs load, are JIT-compiled and decide as expected; refused
// programs, bad files and unknown names fail with messages that say why; writes stay in the copy.
#include <bpf/libbpf.h>
#include <rte_log.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "frames.h"
#include "vswitch/ebpf_classifier.h"

namespace qosvisor::vswitch {
namespace {

std::string Object(const std::string& name) {
  return std::string(QOSVISOR_BPF_DIR) + "/" + name + ".o";
}

std::unique_ptr<EbpfClassifier> MustLoad(const std::string& name, const std::string& program = "") {
  auto loaded = EbpfClassifier::Load(Object(name), program);
  INFO(loaded.message());
  REQUIRE(loaded.ok());
  REQUIRE((*loaded)->jitted());
  return std::move(loaded).value();
}

struct Packet {
  testing::Frame frame;
  ParsedPacket parsed;
  EbpfContext ctx;
};

Packet Make(testing::Frame f) {
  Packet p{std::move(f), {}, {}};
  const auto len = static_cast<uint32_t>(p.frame.bytes.size());
  const bool ok = ParsePacket(p.frame.bytes.data(), len, p.parsed) == ParseStatus::kOk;
  FillEbpfContext(p.frame.bytes.data(), len, p.parsed, ok, p.ctx);
  return p;
}

// Runs the JIT code and the interpreter on the same input; they must agree.
uint64_t RunBoth(const EbpfClassifier& c, Packet& p) {
  EbpfContext copy = p.ctx;
  const uint64_t jit = c.Run(p.ctx);
  CHECK(c.RunInterpreted(copy) == jit);
  return jit;
}

// A UDP datagram whose payload starts with the app_message.c header.
testing::Frame AppDatagram(uint16_t magic, uint32_t id, uint32_t length, uint16_t sport = 7000,
                           uint16_t payload = 200) {
  testing::Frame f = testing::Udp4(sport, 7777, payload);
  const size_t at = f.bytes.size() - payload;
  testing::Frame h;
  h.U16(magic);
  h.U16(0);
  h.U32(id);
  h.U32(length);
  std::copy(h.bytes.begin(), h.bytes.end(), f.bytes.begin() + static_cast<std::ptrdiff_t>(at));
  return f;
}

}  // namespace

TEST_CASE("the context carries parsed fields and a zero-padded copy of the first bytes", "[ebpf]") {
  Packet p = Make(testing::Udp4(1234, 53, 10, /*vlan=*/5));
  CHECK(p.ctx.wire_len == p.frame.bytes.size());
  CHECK(p.ctx.hdr_len == p.frame.bytes.size());
  CHECK(p.ctx.ether_type == 0x0800);
  CHECK(p.ctx.has_vlan == 1);
  CHECK(p.ctx.vlan_tci == 5);
  CHECK(p.ctx.ip_version == 4);
  CHECK(p.ctx.ip_proto == 17);
  CHECK(p.ctx.src_port == 1234);
  CHECK(p.ctx.dst_port == 53);
  CHECK(p.ctx.parse_ok == 1);
  CHECK(p.ctx.payload_len == 10);
  CHECK(p.ctx.payload_offset == p.parsed.payload_offset);
  CHECK(p.ctx.ip4_src == 0x0a000001);
  CHECK(std::equal(p.frame.bytes.begin(), p.frame.bytes.end(), p.ctx.hdr));
  for (uint32_t i = p.ctx.hdr_len; i < sizeof(p.ctx.hdr); ++i) CHECK(p.ctx.hdr[i] == 0);

  Packet big = Make(testing::Udp4(1, 2, 1000));
  CHECK(big.ctx.hdr_len == kEbpfHeaderBytes);
  CHECK(big.ctx.wire_len == big.frame.bytes.size());
}

TEST_CASE("udp_port_class: queue by UDP destination port, other traffic keeps its queue",
          "[ebpf]") {
  auto c = MustLoad("udp_port_class");
  CHECK(c->program_name() == "udp_port_class");
  CHECK(c->section_name() == "qosvisor");
  CHECK(c->instruction_count() > 0);

  Packet dns = Make(testing::Udp4(40000, 53));
  Packet bulk = Make(testing::Udp4(40000, 9050));
  Packet other = Make(testing::Udp4(40000, 8080));
  Packet tcp = Make(testing::Tcp4(40000, 53, 1, 0x10));

  const EbpfDecision d_dns = DecodeEbpfResult(RunBoth(*c, dns));
  CHECK(d_dns.queue == 0);
  CHECK(d_dns.sets_queue());
  CHECK_FALSE(d_dns.has_message());
  CHECK(d_dns.size_hint == 0);
  CHECK(DecodeEbpfResult(RunBoth(*c, bulk)).queue == 2);
  CHECK(DecodeEbpfResult(RunBoth(*c, other)).queue == 1);
  const EbpfDecision d_tcp = DecodeEbpfResult(RunBoth(*c, tcp));
  CHECK_FALSE(d_tcp.sets_queue());
  CHECK(RunBoth(*c, tcp) == QV_EBPF_PASS);
}

TEST_CASE("app_message: message id and size come from the payload header", "[ebpf]") {
  auto c = MustLoad("app_message", "app_message");

  SECTION("a small message: id, size rounded up to KiB, queue 0") {
    Packet p = Make(AppDatagram(0x5156, 42, 3000));
    const EbpfDecision d = DecodeEbpfResult(RunBoth(*c, p));
    CHECK(d.queue == 0);
    CHECK(d.app_message_id == 42);
    CHECK(d.size_hint == 3 * 1024);
    const MessageIdentity m = EbpfMessageIdentity(d, p.parsed);
    CHECK(m.id != 0);
    CHECK(m.id >> 62 == 0);  // the kind no built-in identifier uses
    CHECK(m.size == 3 * 1024);
  }
  SECTION("a large message keeps the flow table's queue") {
    Packet p = Make(AppDatagram(0x5156, 0xDEADBEEF, 10'000'000));
    const EbpfDecision d = DecodeEbpfResult(RunBoth(*c, p));
    CHECK_FALSE(d.sets_queue());
    CHECK(d.app_message_id == 0xDEADBEEF);
    CHECK(d.size_hint == 9766 * 1024);
  }
  SECTION("the same application id from two senders is two messages") {
    Packet a1 = Make(AppDatagram(0x5156, 7, 5000, 7000));
    Packet a2 = Make(AppDatagram(0x5156, 7, 5000, 7000, 100));
    Packet b = Make(AppDatagram(0x5156, 7, 5000, 7001));
    const auto id = [&](Packet& p) {
      return EbpfMessageIdentity(DecodeEbpfResult(c->Run(p.ctx)), p.parsed).id;
    };
    CHECK(id(a1) == id(a2));
    CHECK(id(a1) != id(b));
  }
  SECTION("no header, wrong magic, short payload or not UDP: no decision") {
    Packet wrong = Make(AppDatagram(0x1234, 42, 3000));
    Packet tiny = Make(testing::Udp4(7000, 7777, 4));
    Packet tcp = Make(testing::Tcp4(7000, 7777, 1, 0x18, 64));
    for (Packet* p : {&wrong, &tiny, &tcp}) {
      const EbpfDecision d = DecodeEbpfResult(RunBoth(*c, *p));
      CHECK_FALSE(d.sets_queue());
      CHECK_FALSE(d.has_message());
      CHECK(EbpfMessageIdentity(d, p->parsed).id == 0);
    }
  }
  SECTION("a header not wholly inside the copied bytes is not read") {
    // The frames builders cannot put a UDP payload past byte 128, so edit the context instead:
    // only 8 of the 12 header bytes copied, then a payload offset far past the copy.
    Packet p = Make(AppDatagram(0x5156, 42, 3000));
    p.ctx.hdr_len = p.ctx.payload_offset + 8;
    CHECK(RunBoth(*c, p) == QV_EBPF_PASS);
    Packet far = Make(AppDatagram(0x5156, 42, 3000));
    far.ctx.payload_offset = 1000;
    CHECK(RunBoth(*c, far) == QV_EBPF_PASS);
  }
}

TEST_CASE("a program that loops is refused, naming the instruction and the reason", "[ebpf]") {
  auto r = EbpfClassifier::Load(Object("refused_loop"), "");
  REQUIRE_FALSE(r.ok());
  INFO(r.message());
  CHECK_THAT(r.message(), Catch::Contains("refused_loop"));
  CHECK_THAT(r.message(), Catch::Contains("verifier"));
  CHECK_THAT(r.message(), Catch::Contains("loop"));
  CHECK_THAT(r.message(), Catch::Contains("pc"));
}

TEST_CASE("a program reading past its context is refused, naming the instruction", "[ebpf]") {
  auto r = EbpfClassifier::Load(Object("refused_out_of_bounds"), "");
  REQUIRE_FALSE(r.ok());
  INFO(r.message());
  CHECK_THAT(r.message(), Catch::Contains("memory boundary violation"));
  CHECK_THAT(r.message(), Catch::Contains("pc"));
}

TEST_CASE("a program with a global variable is refused, naming it", "[ebpf]") {
  auto r = EbpfClassifier::Load(Object("refused_global"), "refused_global");
  REQUIRE_FALSE(r.ok());
  INFO(r.message());
  CHECK_THAT(r.message(), Catch::Contains("global/static variables"));
  CHECK_THAT(r.message(), Catch::Contains(".bss"));
}

TEST_CASE("a program with a constant table is refused, naming .rodata", "[ebpf]") {
  auto r = EbpfClassifier::Load(Object("refused_const_table"), "");
  REQUIRE_FALSE(r.ok());
  INFO(r.message());
  CHECK_THAT(r.message(), Catch::Contains(".rodata"));
}

TEST_CASE("a program writing to its context cannot change the packet", "[ebpf]") {
  auto c = MustLoad("writes_context");
  Packet p = Make(testing::Udp4(1000, 2000, 40));
  const std::vector<uint8_t> before = p.frame.bytes;
  CHECK(DecodeEbpfResult(c->Run(p.ctx)).queue == 3);
  CHECK(p.ctx.dst_port == 0);  // the program did write, into the copy
  CHECK(p.ctx.hdr[0] == 0);
  CHECK(p.frame.bytes == before);
  ParsedPacket again;
  REQUIRE(ParsePacket(p.frame.bytes.data(), static_cast<uint32_t>(p.frame.bytes.size()), again) ==
          ParseStatus::kOk);
  CHECK(again.dst_port == 2000);
}

TEST_CASE("bad objects and names give errors a user can act on", "[ebpf]") {
  SECTION("missing file") {
    auto r = EbpfClassifier::Load("/nonexistent/prog.o", "");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.message(), Catch::Contains("/nonexistent/prog.o"));
    CHECK_THAT(r.message(), Catch::Contains("No such file"));
  }
  SECTION("a file that is not an ELF object") {
    char path[] = "/tmp/qv_ebpf_test_XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char text[] = "int main() { return 0; }\n";
    REQUIRE(write(fd, text, sizeof(text) - 1) == sizeof(text) - 1);
    close(fd);
    auto r = EbpfClassifier::Load(path, "");
    unlink(path);
    REQUIRE_FALSE(r.ok());
    INFO(r.message());
    CHECK_THAT(r.message(), Catch::Contains("libbpf cannot open it"));
    CHECK_THAT(r.message(), Catch::Contains("clang -target bpf"));
  }
  SECTION("an ELF object for another machine (this test binary)") {
    auto r = EbpfClassifier::Load("/proc/self/exe", "");
    REQUIRE_FALSE(r.ok());
    INFO(r.message());
    CHECK_THAT(r.message(), Catch::Contains("libbpf cannot open it"));
  }
  SECTION("a directory") {
    auto r = EbpfClassifier::Load("/tmp", "");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.message(), Catch::Contains("not a regular file"));
  }
  SECTION("an unknown program name lists the programs there are") {
    auto r = EbpfClassifier::Load(Object("udp_port_class"), "classify");
    REQUIRE_FALSE(r.ok());
    INFO(r.message());
    CHECK_THAT(r.message(), Catch::Contains("no program or section named 'classify'"));
    CHECK_THAT(r.message(), Catch::Contains("udp_port_class (section qosvisor)"));
  }
  SECTION("a section name selects the program in it") {
    auto r = EbpfClassifier::Load(Object("udp_port_class"), "qosvisor");
    INFO(r.message());
    REQUIRE(r.ok());
    CHECK(r->get()->program_name() == "udp_port_class");
  }
}

TEST_CASE("Load puts DPDK's log stream and libbpf's printer back", "[ebpf]") {
  FILE* before = rte_log_get_stream();
  const libbpf_print_fn_t mine = [](enum libbpf_print_level, const char*, va_list) { return 0; };
  const libbpf_print_fn_t original = libbpf_set_print(mine);
  CHECK_FALSE(EbpfClassifier::Load(Object("refused_loop"), "").ok());
  CHECK_FALSE(EbpfClassifier::Load(Object("refused_const_table"), "").ok());
  CHECK(EbpfClassifier::Load(Object("udp_port_class"), "").ok());
  CHECK(rte_log_get_stream() == before);
  CHECK(libbpf_set_print(original) == mine);
}

TEST_CASE("result encoding round-trips through the ABI macros", "[ebpf]") {
  const EbpfDecision d = DecodeEbpfResult(QV_EBPF_RESULT(12, QV_EBPF_SIZE_KIB(1025), 0xFFFFFFFFu));
  CHECK(d.queue == 12);
  CHECK(d.size_hint == 2048);
  CHECK(d.app_message_id == 0xFFFFFFFFu);
  CHECK(DecodeEbpfResult(QV_EBPF_RESULT(0, QV_EBPF_SIZE_KIB(1ull << 40), 0)).size_hint ==
        0xFFFFu * 1024);
  const EbpfDecision pass = DecodeEbpfResult(QV_EBPF_PASS);
  CHECK_FALSE(pass.sets_queue());
  CHECK_FALSE(pass.has_message());
  CHECK(pass.size_hint == 0);
}

}  // namespace qosvisor::vswitch
