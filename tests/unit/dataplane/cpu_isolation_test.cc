#include "dataplane/cpu_isolation.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace qosvisor::dataplane;

namespace {

cpu_set_t Cpus(std::initializer_list<int> list) {
  cpu_set_t s;
  CPU_ZERO(&s);
  for (int c : list) CPU_SET(c, &s);
  return s;
}

bool Same(const cpu_set_t& a, const cpu_set_t& b) { return CPU_EQUAL(&a, &b); }

cpu_set_t AffinityOf(pid_t pid) {
  cpu_set_t s;
  CPU_ZERO(&s);
  REQUIRE(sched_getaffinity(pid, sizeof s, &s) == 0);
  return s;
}

// A child that only waits, with the given affinity; killed and reaped when done.
struct Sleeper {
  pid_t pid;
  explicit Sleeper(const cpu_set_t& cpus) {
    pid = fork();
    if (pid == 0) {
      for (;;) pause();
    }
    // Set from here: a child setting its own could do so after the isolation moved it.
    REQUIRE(sched_setaffinity(pid, sizeof cpus, &cpus) == 0);
  }
  ~Sleeper() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

TEST_CASE("CPU lists and the kernel's hex masks parse and print", "[isolation]") {
  auto list = ParseCpuList("0,2-4,7");
  REQUIRE(list.ok());
  CHECK(FormatCpuList(*list) == "0,2-4,7");
  CHECK(FormatCpuMask(*list) == "0000009d");
  auto mask = ParseCpuMask("00000001,00000003\n");
  REQUIRE(mask.ok());
  CHECK(FormatCpuList(*mask) == "0-1,32");
  CHECK(FormatCpuMask(*mask) == "00000001,00000003");
  CHECK(FormatCpuList(*ParseCpuMask("f")) == "0-3");

  for (const char* bad : {"", "a", "1-", "3-1", "1,,2", "-1", "99999"}) {
    INFO(bad);
    auto r = ParseCpuList(bad);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains("CPU list"));
  }
  CHECK_THAT(ParseCpuMask("3g").status().message(), Catch::Contains("'g' is not a hex digit"));
  CHECK_THAT(ParseCpuMask(",").status().message(), Catch::Contains("empty"));
}

TEST_CASE("isolation refuses no CPU, a CPU the box lacks, and every CPU", "[isolation]") {
  IsolationOptions o;
  o.record_dir = "";
  o.box_cpus = 2;
  o.only_pid = getpid();  // nothing real is touched even if a check were missing
  CHECK_THAT(CpuIsolation::Start(Cpus({}), o).status().message(), Catch::Contains("no CPU"));
  CHECK_THAT(CpuIsolation::Start(Cpus({1, 5}), o).status().message(),
             Catch::Contains("the box has CPUs 0-1, not 5"));
  CHECK_THAT(CpuIsolation::Start(Cpus({0, 1}), o).status().message(),
             Catch::Contains("every CPU of the box"));

  // The box's CPUs as the kernel lists them, gaps included.
  const fs::path online = fs::temp_directory_path() / fmt::format("qv-online-{}", getpid());
  std::ofstream(online) << "0,2-3\n";
  o.box_cpus = 0;
  o.online_cpus = online.string();
  CHECK_THAT(CpuIsolation::Start(Cpus({1}), o).status().message(),
             Catch::Contains("the box has CPUs 0,2-3, not 1"));
  CHECK_THAT(CpuIsolation::Start(Cpus({0, 2, 3}), o).status().message(),
             Catch::Contains("CPUs 0,2-3 are every CPU"));
  fs::remove(online);
}

TEST_CASE("isolation moves a process off the CPUs and puts it back", "[isolation]") {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    WARN("SKIPPED: needs 2 CPUs");
    return;
  }
  const cpu_set_t both = Cpus({0, 1});
  Sleeper free_to_move(both);
  IsolationOptions o;
  o.record_dir = "";
  o.only_pid = free_to_move.pid;
  {
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE(iso.ok());
    CHECK((*iso)->tasks_moved() == 1);
    CHECK(Same(AffinityOf(free_to_move.pid), Cpus({0})));
    CHECK_THAT((*iso)->Describe(), Catch::StartsWith("cpu 1: 1 tasks moved off"));
  }
  CHECK(Same(AffinityOf(free_to_move.pid), both));

  SECTION("a task bound to the CPUs only stays there") {
    Sleeper pinned(Cpus({1}));
    o.only_pid = pinned.pid;
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE(iso.ok());
    CHECK((*iso)->tasks_moved() == 0);
    CHECK((*iso)->tasks_left() == 1);
    CHECK(Same(AffinityOf(pinned.pid), Cpus({1})));
  }
  SECTION("a mask someone changed meanwhile is left as they set it") {
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE(iso.ok());
    const cpu_set_t theirs = Cpus({1});
    REQUIRE(sched_setaffinity(free_to_move.pid, sizeof theirs, &theirs) == 0);
    iso->reset();
    CHECK(Same(AffinityOf(free_to_move.pid), theirs));
  }
}

TEST_CASE("isolation moves interrupts and unbound workqueues and restores them", "[isolation]") {
  const fs::path root = fs::temp_directory_path() / fmt::format("qv-iso-{}", getpid());
  fs::remove_all(root);
  fs::create_directories(root / "irq/5");
  fs::create_directories(root / "irq/6");
  std::ofstream(root / "irq/5/smp_affinity") << "3\n";
  std::ofstream(root / "irq/6/smp_affinity") << "00000002\n";  // on the CPU only: stays
  std::ofstream(root / "wq_cpumask") << "00000003\n";
  IsolationOptions o;
  o.record_dir = "";
  o.proc = root.string();  // no task directories: no real task is touched
  o.workqueue_cpumask = (root / "wq_cpumask").string();
  o.box_cpus = 2;
  {
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE(iso.ok());
    CHECK((*iso)->irqs_moved() == 1);
    CHECK((*iso)->workqueues_moved());
    CHECK(ReadAll(root / "irq/5/smp_affinity") == "00000001");
    CHECK(ReadAll(root / "irq/6/smp_affinity") == "00000002");
    CHECK(ReadAll(root / "wq_cpumask") == "00000001");
    CHECK((*iso)->Describe() == "cpu 1: 0 tasks moved off (0 bound there stay), 1 interrupts, "
                                "unbound workqueues");
  }
  CHECK(ReadAll(root / "irq/5/smp_affinity") == "00000003");
  CHECK(ReadAll(root / "wq_cpumask") == "00000003");
  fs::remove_all(root);
}

TEST_CASE("an isolation that never stopped is put back by the next one of the same CPUs",
          "[isolation]") {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    WARN("SKIPPED: needs 2 CPUs");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / fmt::format("qv-iso-record-{}", getpid());
  fs::remove_all(dir);
  const cpu_set_t both = Cpus({0, 1});
  Sleeper sleeper(both);
  IsolationOptions o;
  o.record_dir = dir.string();
  o.only_pid = sleeper.pid;

  // A process isolates CPU 1 and dies without stopping it, as kill -9 would leave it.
  const pid_t crashed = fork();
  if (crashed == 0) {
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    _exit(iso.ok() && (*iso)->tasks_moved() == 1 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(crashed, &status, 0) == crashed);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(Same(AffinityOf(sleeper.pid), Cpus({0})));
  REQUIRE(fs::exists(dir / "isolated-cpus-1"));

  {
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE(iso.ok());
    CHECK((*iso)->recovered() == 1);
    CHECK_THAT((*iso)->Describe(), Catch::EndsWith("put back 1 masks an earlier isolation left moved"));
    CHECK(Same(AffinityOf(sleeper.pid), Cpus({0})));  // moved again, by this one
  }
  CHECK(Same(AffinityOf(sleeper.pid), both));  // and back to what it was before either
  CHECK_FALSE(fs::exists(dir / "isolated-cpus-1"));

  SECTION("a damaged record is refused by file and line, and left for the operator") {
    std::ofstream(dir / "isolated-cpus-1") << "task 12 00000003 00000001\ntask twelve 3 1\n";
    auto iso = CpuIsolation::Start(Cpus({1}), o);
    REQUIRE_FALSE(iso.ok());
    CHECK_THAT(iso.status().message(),
               Catch::Contains("isolated-cpus-1:2: 'task twelve 3 1' is not 'task TID BEFORE"));
    CHECK(fs::exists(dir / "isolated-cpus-1"));
    CHECK(Same(AffinityOf(sleeper.pid), both));
  }
  fs::remove_all(dir);
}
