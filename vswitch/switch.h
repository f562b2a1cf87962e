// The switch's data path, run to completion by one or more lcores ("workers"): poll ports → parse
// → VLAN ingress → flow table (cached) → actions (set_queue, VLAN edits, output/NORMAL/FLOOD) →
// per-port TX bursts, or, for uplinks, message identification → the uplink's scheduler → what the
// pacer allows → TX.
//
// Work is divided by ownership, so that no state has two writers: each bridge (its ports' RX and
// TX, its MAC table) and each uplink (its scheduler and TX) belongs to one worker, dealt out
// round robin — bridges first, then uplinks — so with two workers and one bridge the uplinks run
// on the second. A packet for an uplink owned by another worker crosses an rte_ring (many
// producers, one consumer) after classification and message identification.
//
// The data path takes no locks, allocates nothing and throws nothing. Its code is in one file per
// stage: switch.cc (building, Poll, Drain), switch_bridge.cc, switch_flow.cc, switch_uplink.cc,
// with the steps several stages inline in switch_inl.h; the control side in switch_snapshot.cc,
// switch_tables.cc, switch_ports.cc (ports joining and leaving), switch_reconfigure.cc (uplinks
// reconfigured while they run) and switch_workers.cc.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/packet_batch.h"
#include "common/status.h"
#include "dataplane/port.h"
#include "sched/scheduler.h"
#include "vswitch/ebpf_classifier.h"
#include "vswitch/flow_table.h"
#include "vswitch/mac_table.h"
#include "vswitch/message_identifier.h"

struct rte_mempool;
struct rte_rcu_qsbr;
struct rte_ring;

namespace qosvisor::vswitch {

// kNone: a plain member, which carries every VLAN and untagged traffic (as in Open vSwitch).
enum class VlanMode : uint8_t { kNone, kAccess, kTrunk };

struct BridgeMember {
  uint16_t port = 0;  // index into SwitchSpec::ports
  VlanMode vlan_mode = VlanMode::kNone;
  uint16_t access_tag = 0;
  std::vector<uint16_t> trunk_tags;  // empty: every VLAN
};

struct BridgeSpec {
  std::string name;
  std::vector<BridgeMember> members;  // OpenFlow port numbers are 1..n in this order
  uint64_t mac_aging_ns = 300'000'000'000ull;
  uint32_t mac_table_size = 8192;
  std::vector<FlowRule> flows;
};

// How packets of a traffic class (an OpenFlow queue id) are grouped into messages.
struct ClassSpec {
  uint32_t queue = 0;
  MessageMode mode = MessageMode::kDatagram;
  uint64_t idle_ns = 1'000'000;  // tcp-gap threshold
  std::string ebpf_object;       // ebpf: the compiled program (clang -target bpf)
  std::string ebpf_program;      // ebpf: program or section name; empty = the first
  bool operator==(const ClassSpec&) const = default;
};

struct UplinkSpec {
  uint16_t port = 0;                 // index into SwitchSpec::ports
  sched::SchedulerConfig scheduler;  // its classes[i] is the class with queue class_queues[i]
  std::vector<uint32_t> class_queues;
  uint16_t default_class = 0;  // for packets without set_queue, or with a queue not on this uplink
  bool operator==(const UplinkSpec&) const = default;
};

// A copy of a port's packets, both ways, for the control side to write out (qosctl capture):
// the worker copies into `pool` and enqueues on `ring`; what does not fit is counted, never
// waited for.
struct CaptureTap {
  rte_ring* ring = nullptr;
  rte_mempool* pool = nullptr;
  std::atomic<uint64_t> dropped{0};
};

// A port joining a running switch (AddPort): a VM's NIC port made after start.
struct PortJoin {
  dataplane::Port* port = nullptr;  // not owned; kept until RemovePort returns
  std::string bridge;
  VlanMode vlan_mode = VlanMode::kNone;
  uint16_t access_tag = 0;
  std::vector<uint16_t> trunk_tags;
  int default_queue = -1;  // the class of its frames no rule gives a queue; -1: none
};

struct SwitchSpec {
  std::vector<dataplane::Port*> ports;  // not owned; they outlive the switch
  uint16_t spare_ports = 64;            // room for ports added while running (AddPort)
  std::vector<BridgeSpec> bridges;
  std::vector<ClassSpec> classes;
  std::vector<UplinkSpec> uplinks;
  uint16_t burst = 32;
  bool forward_unparsable = false;  // forward truncated/malformed frames at L2 instead of dropping
  // Per port (SwitchSpec::ports order): the queue (class) of packets arriving there that no flow
  // rule gives a set_queue, e.g. a VM NIC's class; -1 or absent: none.
  std::vector<int> port_default_queue;
  uint32_t flow_state_capacity = 65536;
  uint16_t workers = 1;               // lcores that will call Poll(worker, now)
  uint32_t handoff_ring_size = 4096;  // per uplink fed from another worker (a power of two)
};

// Drops by reason, and what the pipeline did; all counted by the switching lcore.
struct SwitchCounters {
  uint64_t rx_packets = 0;
  uint64_t malformed = 0;
  uint64_t truncated = 0;
  uint64_t vlan_dropped = 0;  // VLAN not allowed on the input or output port, or port removed
  uint64_t no_bridge = 0;     // arrived on a port that is in no bridge
  uint64_t flow_dropped = 0;  // a rule's actions said drop (or output nowhere)
  uint64_t flooded = 0;
  uint64_t copy_failed = 0;    // no mbuf for one more copy of a flooded packet
  uint64_t tx_dropped = 0;     // a port's TX queue was full
  uint64_t sched_dropped = 0;  // dropped by an uplink scheduler (see its per-class stats)
  uint64_t ebpf_runs = 0;
  uint64_t ebpf_reclassified = 0;   // the program chose another class
  uint64_t ebpf_unknown_queue = 0;  // the program named a queue this uplink does not carry
  uint64_t flow_cache_hits = 0;
  uint64_t flow_cache_misses = 0;
  uint64_t handoff_dropped = 0;  // the ring to another worker's uplink was full
  // Gaps between a worker's polls (RunWorker): its lcore was kept from running, by the kernel or
  // the host, or one poll took that long. Packets wait through them; tails show them.
  uint64_t poll_gaps_over_100us = 0;
  uint64_t poll_gaps_over_1ms = 0;
  uint64_t longest_poll_gap_ns = 0;  // the largest over the workers

  void Add(const SwitchCounters& o);
};

class Switch {
 public:
  static Result<std::unique_ptr<Switch>> Create(const SwitchSpec& spec, rte_mempool* pool);
  ~Switch();

  // One pass of a worker over what it owns: receive a burst from each of its bridges' ports and
  // switch it, then take what other workers handed to its uplinks and let each send what its
  // pacer allows. Called in a loop by the worker's lcore.
  void Poll(uint16_t worker, uint64_t now_tsc);
  // Every worker in turn, from one thread (tests, tools, single-lcore runs).
  void Poll(uint64_t now_tsc);
  // A worker's lcore loop: polls until `stop` is set. While it runs, the worker reports a
  // quiescent state after every poll, for Quiesce().
  void RunWorker(uint16_t worker, const std::atomic<bool>& stop);
  // Control thread: returns once every worker running RunWorker has finished the poll it was in,
  // so nothing it loaded before the call (a VM port's NIC, a guest's memory) is still in use.
  // Immediate when no worker runs.
  void Quiesce();
  uint16_t workers() const { return static_cast<uint16_t>(workers_.size()); }
  // Returns every packet the switch holds (queued in schedulers, waiting for TX) to the pool.
  void Drain();

  // What a live reconfiguration of an uplink did with the packets its scheduler held.
  struct UplinkReload {
    // The new tree took the old one's table and queues as they were (a change of rates,
    // weights, priorities, tenants, buffers or idle times: sched::Scheduler::AdoptQueues), at
    // a cost that does not grow with them; otherwise every queued packet was moved.
    bool in_place = false;
    uint64_t queued_packets = 0;  // held by the old tree at the change
  };

  // Control thread: the uplink on `port` gets new classes (their message rules), a new scheduler
  // tree, rates and buffers, while it runs. At its next poll its owner hands the new scheduler
  // the old one's queues as they are when the change leaves ranking alone, and otherwise moves
  // what is queued into it, each message's packets in their order; packets of a class the new
  // tree lacks are dropped and counted (SchedulerStats::dropped_reconfigured). A class whose
  // name stays keeps its counters. `spec.port` is ignored. Without `lcore_running` (no worker
  // polls) the change is made here. Not while a TakeSnapshot is under way (the owner resizes its
  // part of the snapshot).
  Result<UplinkReload> ReconfigureUplink(const std::string& port, const UplinkSpec& spec,
                                         const std::vector<ClassSpec>& classes, bool lcore_running,
                                         std::chrono::milliseconds timeout = kSnapshotTimeout);

  // Control thread: a new rule set for a bridge, published for the lcore to use from its next
  // poll. The old table is freed (by the control thread) once the lcore has finished a poll
  // after the swap, so the lcore never waits and never frees.
  Status ReplaceFlows(const std::string& bridge, const std::vector<FlowRule>& rules);

  // Control thread: the worker that polls `port` copies its packets into `tap` from its next poll
  // (received, and sent or handed to an uplink's wire) until StopCapture, which returns once no
  // worker uses the tap. One capture per port at a time.
  Status StartCapture(const std::string& port, CaptureTap* tap);
  void StopCapture(const std::string& port);

  // Control thread: the rules a bridge runs now (from the configuration or ReplaceFlows), and the
  // names of its ports in OpenFlow order ("" where a port was removed).
  Result<std::vector<FlowRule>> Flows(const std::string& bridge) const;
  Result<std::vector<std::string>> BridgePorts(const std::string& bridge) const;

  // Control thread: a port joins a bridge of the running switch, published like flow rules (the
  // lcore takes no lock and sees it from its next poll). Returns its OpenFlow port number: a
  // removed port's number is reused, as Open vSwitch does. Frames the MAC table learned on an
  // earlier holder of that number are not sent to the new port.
  Result<uint32_t> AddPort(const PortJoin& join);
  // Control thread: the port leaves its bridge. Returns once no worker uses it any more and the
  // frames waiting for it are back in the pool: the port may then be destroyed.
  Status RemovePort(const std::string& name);
  // Control thread: the port's VLAN mode and tags in its bridge change, published like a port
  // joining (frames on their way keep the verdict they had).
  Status SetPortVlan(const std::string& name, VlanMode mode, uint16_t access_tag,
                     const std::vector<uint16_t>& trunk_tags);
  // Bridges can hold this many ports: a MAC table entry keeps the port's slot in 8 bits and its
  // incarnation (how often the slot was given to a new port) in the other 8.
  static constexpr size_t kMaxBridgePorts = 256;

  // One learned address of a bridge's MAC table.
  struct FdbEntry {
    uint8_t mac[6];
    uint16_t vlan;
    uint32_t ofport;  // the bridge's OpenFlow port number
    uint64_t age_ns;  // since the address was last seen
  };
  // Counters (summed over workers) and scheduler statistics.
  struct Snapshot {
    SwitchCounters counters;
    std::vector<sched::SchedulerStats> uplinks;
    // Per bridge: addresses its MAC table holds. One that ages out leaves the count within an
    // eighth of the bridge's aging time (see MacTable::Age).
    std::vector<uint32_t> learned_macs;
    // The learned addresses of the bridge asked for (TakeSnapshot's fdb_bridge), else empty.
    std::vector<FdbEntry> fdb;
    // Per uplink: an inspection of its scheduler (sched::BasicScheduler::Inspect) where one was
    // asked for (TakeSnapshot's detail_uplink), else empty.
    std::vector<sched::SchedulerDetail> details;
  };
  // An uplink inspection lists at most this many messages, and reads at most this many head
  // packets (each may miss the cache) for the rank histograms.
  static constexpr uint32_t kDetailTopMessages = 100;
  static constexpr uint32_t kDetailRankSamples = 4096;
  static constexpr std::chrono::milliseconds kSnapshotTimeout{1000};
  // For a request with an uplink inspection, which takes a poll per kInspectSlotsPerPoll slots of
  // its message table: 8192 polls for 4 million.
  static constexpr std::chrono::milliseconds kInspectTimeout{10'000};
  // What a poll may add to its own work without a 1024-entry RX ring of a 10 GbE port filling at
  // 64 bytes (in 69 us): on a cold table of a million messages, bench_sched's sched_inspect line
  // measures the steps at this size. Such a table answers within about 2048 polls.
  static constexpr uint32_t kInspectSlotsPerPoll = 512;
  // Control thread, one call at a time. With `lcore_running`, each worker copies its part at its
  // next poll (so the data path keeps plain, unshared counters), and a worker that has not done
  // so within `timeout` makes this an error; otherwise (no worker polls) they are read directly.
  // `fdb_bridge` (an index into bridge_names(), or -1): also copy that bridge's MAC table, which
  // its worker scans at the poll it answers in (a dump on request, never on the packet path).
  // `detail_uplink` (an index into the uplinks, or -1): also inspect that uplink's scheduler, on
  // its owner's lcore in the same way, into Snapshot::details; the lcore spreads the scan over
  // polls, kInspectSlotsPerPoll message-table slots each, and answers at the poll that ends it.
  Result<Snapshot> TakeSnapshot(bool lcore_running,
                                std::chrono::milliseconds timeout = kSnapshotTimeout,
                                int fdb_bridge = -1, int detail_uplink = -1);
  const std::vector<std::string>& bridge_names() const { return bridge_names_; }
  // Polls done by the slowest worker.
  uint64_t polls() const;

 private:
  struct Member {
    uint16_t port;
    VlanMode mode;
    uint16_t access_tag;      // kRemovedTag: the port left (no frame is carried to or from it)
    uint8_t incarnation;      // bumped each time the slot is given to a new port
    uint64_t trunk_bits[64];  // 4096 VLAN bits; all ones when trunk_tags is empty
  };
  // An access tag no 12-bit VLAN equals: a removed member carries nothing, so every check that
  // decides where a frame may go leaves it out without a test of its own.
  static constexpr uint16_t kRemovedTag = 0xffff;
  // A bridge's ports in OpenFlow order (port number = index + 1); published whole and never
  // changed after, so the lcore reads it without locks. A removed port keeps its slot (and so its
  // OpenFlow number) as a member that carries nothing.
  struct MemberSet {
    std::vector<Member> list;
    std::vector<std::string> names;  // "" for a removed port
    size_t size() const { return list.size(); }
    const Member& operator[](size_t i) const { return list[i]; }
  };
  // What the lcore reads: the current set, replaced by the control thread.
  class PublishedMembers {
   public:
    const MemberSet& get() const { return *now_.load(std::memory_order_acquire); }
    size_t size() const { return get().size(); }
    const Member& operator[](size_t i) const { return get()[i]; }
    // Control thread: publishes `next`, returning the set it replaces (to retire).
    std::shared_ptr<const MemberSet> Publish(std::shared_ptr<const MemberSet> next) {
      auto old = std::move(owner_);
      owner_ = std::move(next);
      now_.store(owner_.get(), std::memory_order_release);
      return old;
    }
    const std::shared_ptr<const MemberSet>& owner() const { return owner_; }

   private:
    std::atomic<const MemberSet*> now_{nullptr};
    std::shared_ptr<const MemberSet> owner_;
  };
  // The MAC table's value for a member: slot and incarnation (see kMaxBridgePorts).
  static uint16_t MacValue(int member, uint8_t incarnation) {
    return static_cast<uint16_t>(member | incarnation << 8);
  }
  // The member a MAC table value names, or -1 when it was learned on an earlier holder of that
  // port number (or a number the set no longer has).
  static int MemberOfMacValue(const MemberSet& members, int value) {
    const int member = value & 0xff;
    return static_cast<size_t>(member) < members.size() &&
                   members[member].incarnation == static_cast<uint8_t>(value >> 8)
               ? member
               : -1;
  }
  struct Bridge {
    std::string name;
    PublishedMembers members;
    std::unique_ptr<MacTable> macs;
    std::atomic<const FlowTable*> table{nullptr};  // what the lcore uses
    std::shared_ptr<const FlowTable> owner;        // keeps `table` alive (control thread)
    std::vector<FlowRule> rules;  // what `owner` was built from, to rebuild it as ports change
  };
  struct PortState {
    int bridge = -1;
    int member = -1;  // index in the bridge
    int uplink = -1;
    int default_queue = -1;
    PacketBatch tx;
  };
  // How an uplink class's packets are grouped into messages.
  struct UplinkClass {
    MessageMode mode = MessageMode::kDatagram;
    uint64_t idle_tsc = 0;                 // tcp-gap
    const EbpfClassifier* ebpf = nullptr;  // MessageMode::kEbpf
  };
  // How an uplink's frames find their class, for the workers that classify them; replaced whole
  // when the uplink is reconfigured, and numbered so that its owner knows which table a queued
  // packet's class id refers to.
  struct UplinkRules {
    std::vector<int32_t> class_of_queue;  // queue id → class index (dense up to max queue)
    std::vector<UplinkClass> classes;     // per class index
    uint16_t default_class = 0;
    uint8_t generation = 0;
    // The class a packet classified under the previous generation takes now (-1: gone).
    std::vector<int32_t> class_of_previous;
    std::vector<std::string> class_names;  // the scheduler's, for the next reconfiguration
    std::vector<std::unique_ptr<EbpfClassifier>> programs;  // the classes' eBPF programs
  };
  // A live reconfiguration on its way from the control thread to the uplink's owner.
  struct UplinkChange {
    std::unique_ptr<sched::Scheduler> scheduler;  // the new one; the old one on return
    const UplinkRules* rules = nullptr;
    sched::SchedulerStats before;  // the old scheduler's counts, sized by the control thread
    std::vector<sched::ClassStats> snapshot_classes;  // the owner's snapshot storage, swapped
    sched::SchedulerDetail snapshot_detail;           // the same for inspections
    uint64_t gone = 0;  // packets of removed classes
    UplinkReload outcome;
    std::atomic<bool> done{false};
  };
  struct Uplink {
    // What every worker that classifies frames for the uplink reads, on a line of its own: the
    // owner's writes below must not make it bounce between cores.
    uint16_t port;
    uint16_t owner;                                  // worker
    std::atomic<const UplinkRules*> rules{nullptr};  // what classifying workers use
    rte_ring* handoff = nullptr;  // from other workers; nullptr when only the owner feeds it
    // The owner's.
    alignas(64) std::unique_ptr<sched::Scheduler> scheduler;
    uint8_t generation = 0;  // of the rules the scheduler's class ids follow
    // Packets classified under the previous rules may still arrive; closed once every worker
    // has moved on (settled) and the hand-off ring has been seen empty.
    bool restaging = false;
    std::atomic<bool> settled{false};
    std::atomic<UplinkChange*> change{nullptr};
    std::shared_ptr<const UplinkRules> rules_owner;  // control thread
    PacketBatch pending;  // to enqueue
    PacketBatch stalled;  // dequeued but the port did not take them yet
  };
  // What the first pass over a burst learns about each packet, for the second.
  struct Stage {
    ParsedPacket parsed;
    FlowKey key;
    uint16_t vlan;
    bool repeat;  // the same flow key as the frame before it in the burst: the same actions
  };
  // An uplink and the class a frame takes there, resolved once for a run of frames.
  struct UplinkTarget {
    Uplink* up = nullptr;
    const UplinkClass* rules = nullptr;  // the class's entry in up->rules
    uint16_t index = 0;                  // in uplinks_
    int cls = 0;
    uint8_t generation = 0;               // of `table`
    const UplinkRules* table = nullptr;  // up->rules when resolved
  };
  // Where the frames of a verdict go: straight to one port's TX batch or one uplink, or through
  // the general path (copies, VLAN tags, drops).
  enum class Egress : uint8_t { kGeneral, kTx, kUplink };
  // What a frame's actions decide; frames with one flow key share it.
  struct Verdict {
    static constexpr uint16_t kMaxOutputs = 64;
    uint16_t outputs[kMaxOutputs];  // member indexes
    uint16_t n_out = 0;
    uint16_t vlan = 0;
    int queue = -1;
    uint8_t floods = 0;     // FLOOD actions and NORMALs that flooded
    bool shareable = true;  // frames with the same key may take it (one NORMAL at most)
    Egress egress = Egress::kGeneral;
    int port = -1;        // kTx, kUplink: the one output's port
    UplinkTarget uplink;  // kUplink
  };
  // One lcore's share: what it polls and owns, and the state only it writes.
  struct Worker {
    uint16_t index = 0;
    std::vector<uint16_t> bridges;
    // Members of its bridges, and ports in no bridge; replaced whole when ports come and go.
    std::atomic<const std::vector<uint16_t>*> rx_ports{nullptr};
    std::shared_ptr<const std::vector<uint16_t>> rx_owner;  // control thread
    std::vector<uint16_t> uplinks;
    std::vector<PacketBatch> to_uplink;  // per uplink owned elsewhere: staged for its ring
    FlowCache cache;
    Stage stage[kMaxBurst];
    SwitchCounters counters;
    std::unique_ptr<MessageIdentifier> identifier;
    EbpfContext ebpf_ctx;  // scratch copy handed to programs (they may write to it)
    // Quiescent-state tracking: bumped after every poll.
    std::atomic<uint64_t> epoch{0};
    // Snapshot hand-off: control sets requested, the worker fills snapshot and sets served.
    std::atomic<uint64_t> snapshot_requested{0};
    std::atomic<uint64_t> snapshot_served{0};
    std::atomic<int> fdb_requested{-1};     // bridge whose MAC table the next answer copies
    std::atomic<int> detail_requested{-1};  // uplink the next answer inspects
    // An uplink inspection under way on this lcore, answering request `ticket` when it ends.
    struct Inspection {
      bool active = false;
      uint64_t ticket = 0;
      uint16_t uplink = 0;
      sched::InspectionCursor cursor;
    } inspection;
    // Only the parts this worker owns are filled; sized by PrepareSnapshots, so that filling it
    // on the lcore allocates nothing.
    Snapshot snapshot;
  };

  Switch() = default;
  Status Assign(const SwitchSpec& spec);
  Status CreateUplink(const SwitchSpec& spec, const UplinkSpec& us, uint16_t owner);
  Result<std::shared_ptr<UplinkRules>> MakeUplinkRules(const std::string& name,
                                                       const UplinkSpec& us,
                                                       const std::vector<ClassSpec>& classes) const;
  // The uplink's owner (or the control thread when no worker polls): what waits is moved into
  // the change's scheduler, which takes the old one's place (switch_reconfigure.cc).
  void ApplyUplinkChange(Worker& w, uint16_t uplink, UplinkChange& change, uint64_t now);
  void DrainHandoffIntoScheduler(Uplink& up);
  void MoveQueuedPackets(sched::Scheduler& from, UplinkChange& change, uint64_t now);
  // Packets classified under the previous rules take their class under the current ones.
  void Restage(Uplink& up, PacketBatch& batch);
  void FinishRestaging(Uplink& up);
  // Owner, once a poll: a pending change applied, or the restaging window closed.
  inline void CheckUplinkChange(Worker& w, uint16_t uplink, uint64_t now);
  static inline bool Carries(const Member& m, uint16_t vlan);
  static Member MakeMember(uint16_t port, VlanMode mode, uint16_t access_tag,
                           const std::vector<uint16_t>& trunk_tags, uint8_t incarnation);
  void SwitchBurst(Worker& w, PacketBatch& rx, uint16_t in_port, uint64_t now);
  // How a burst from one port is switched. When the table looks at nothing but the input port:
  // every frame to one plain member, NORMAL from a plain member, or the port's actions frame by
  // frame; otherwise a flow-cache lookup per frame.
  enum class Route : uint8_t { kOnePort, kNormal, kEachFrame, kLookup };
  struct BurstRoute {
    Route route;
    uint16_t port;  // kOnePort: where every frame goes
  };
  static uint32_t OnlyOutput(const FlowActions& actions);
  bool PlainMember(const Member& m) const;
  static bool KeepsItsTag(const Stage& st);
  BurstRoute RouteOf(const Bridge& bridge, const PortState& in, const FlowActions* actions) const;
  void SendAllTo(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                 const FlowActions* actions, uint16_t port, uint64_t now);
  void AppendTx(Worker& w, uint16_t port, rte_mbuf* const* pkts, uint16_t n);
  // Frames for one port, gathered at the front of a burst's array (never ahead of the frame
  // being switched).
  struct TxRun {
    uint16_t n = 0;
    int port = -1;
  };
  [[gnu::always_inline]] inline bool Gather(Worker& w, PacketBatch& rx, TxRun& run, int port,
                                            rte_mbuf* m);
  void SwitchNormal(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                    const Member& member, uint32_t of_port, const FlowActions* normal,
                    uint64_t now);
  // Headers are requested this many frames ahead of their parse (as DPDK's l3fwd does): enough
  // to hide a miss on ports that DMA, without a separate pass over frames that arrive in cache.
  static constexpr uint16_t kAhead = 4;
  static void PrefetchRestOfFrame(const rte_mbuf* m);
  void LookUpAndForward(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                        const FlowTable& table, uint64_t now);
  void ForwardOneByOne(Worker& w, rte_mbuf* m, const PortState& in, Bridge& bridge,
                       const FlowActions* actions, Stage& st, uint64_t now);
  static int SoleFloodMember(const Bridge& bridge, int in_member, uint16_t vlan);
  [[gnu::always_inline]] inline int LearnAndLookup(Bridge& bridge, const uint8_t* frame,
                                                   uint16_t vlan, int in_member, uint64_t now);
  // The per-packet steps are inlined into the burst loop: a call each costs as much as some of
  // them do.
  [[gnu::always_inline]] inline bool Classify(Worker& w, rte_mbuf* m, const Member& member,
                                              uint32_t of_port, Route route, const Stage* previous,
                                              Stage& st);
  [[gnu::always_inline]] inline void Forward(Worker& w, rte_mbuf* m, const PortState& in,
                                             Bridge& bridge, const FlowActions* actions,
                                             const Stage& st, uint64_t now);
  [[gnu::always_inline]] inline void Decide(rte_mbuf* m, const PortState& in, Bridge& bridge,
                                            const FlowActions* actions, const Stage& st,
                                            uint64_t now, Verdict& v);
  void PlanEgress(const Bridge& bridge, const ParsedPacket& p, Verdict& v);
  void Deliver(Worker& w, rte_mbuf* m, Bridge& bridge, const Verdict& v, const ParsedPacket& parsed,
               uint64_t now);
  static int EgressVlan(const Member& out, uint16_t vlan);
  static int ClassOf(const UplinkRules& rules, int queue);
  [[gnu::always_inline]] inline bool IngressVlan(const Member& in, const ParsedPacket& p,
                                                 uint16_t& vlan);
  [[gnu::always_inline]] inline void Output(Worker& w, rte_mbuf* m, const Member& out,
                                            uint16_t vlan, int queue, const ParsedPacket& p,
                                            uint64_t now);
  // The uplink's class for a set_queue id (-1: none) under the rules its workers use now.
  inline UplinkTarget TargetOf(uint16_t uplink, int queue);
  void ToUplink(Worker& w, rte_mbuf* m, uint16_t uplink, int queue, const ParsedPacket& p,
                uint64_t now);
  [[gnu::always_inline]] inline void StageForUplink(Worker& w, rte_mbuf* m, const UplinkTarget& t,
                                                    const ParsedPacket& p, uint64_t now);
  MessageIdentity RunEbpf(Worker& w, const EbpfClassifier& prog, rte_mbuf* m,
                          const UplinkRules& rules, int& cls,
                          const ParsedPacket& p, uint32_t wire_len, uint64_t now);
  inline void FlushPort(Worker& w, uint16_t port);
  // Copies pkts into the port's capture tap, if it has one: inline, a load per burst otherwise.
  [[gnu::always_inline]] inline void Capture(uint16_t port, rte_mbuf* const* pkts, uint16_t n);
  void CopyToTap(CaptureTap& tap, rte_mbuf* const* pkts, uint16_t n);
  void FlushHandoffs(Worker& w);
  void TakeHandoff(Uplink& up);
  inline void FlushUplink(Uplink& up);
  void ServeUplink(Uplink& up, uint64_t now);
  static void OnSchedDrop(void* worker, rte_mbuf* const* pkts, uint16_t count);
  void PrepareSnapshots();
  void ServeSnapshot(Worker& w, uint64_t ticket);
  bool InspectOverPolls(Worker& w, uint64_t ticket);
  // Whether `uplink` (an index, or -1 for none) is one of the worker's.
  static bool OwnsUplink(const Worker& w, int uplink) {
    return uplink >= 0 && std::find(w.uplinks.begin(), w.uplinks.end(), uplink) != w.uplinks.end();
  }
  // `inspect`: run the inspection a request asks for now, whole (no lcore polls).
  void FillSnapshot(const Worker& w, Snapshot& out, bool inspect) const;
  void FillFdb(const Worker& w, int bridge, Snapshot& out) const;
  void FillDetail(const Worker& w, int uplink, Snapshot& out) const;
  Snapshot Merge(int detail_uplink) const;
  void ReclaimRetiredTables();
  Status InitQuiescence();

  std::vector<dataplane::Port*> ports_;
  std::vector<PortState> port_state_;
  std::unique_ptr<std::atomic<CaptureTap*>[]> captures_;  // per port slot; nullptr: none
  std::vector<std::unique_ptr<Bridge>> bridges_;
  std::vector<uint16_t> bridge_owner_;
  std::vector<std::unique_ptr<Uplink>> uplinks_;
  std::vector<std::unique_ptr<Worker>> workers_;
  rte_mempool* pool_ = nullptr;
  uint16_t burst_ = 32;
  bool forward_unparsable_ = false;
  uint64_t hz_ = 0;
  std::vector<std::string> bridge_names_;
  // Control thread: the bridge's member set and its flow table rebuilt for it (port names and
  // per-port answers), published together; an error leaves both as they were.
  Status PublishMembers(Bridge& bridge, std::shared_ptr<const MemberSet> members);
  // Control thread: publishes a worker's new receive list, retiring the old one.
  void PublishRx(Worker& w, std::shared_ptr<const std::vector<uint16_t>> rx);
  // Control thread: keeps `object` until every worker has finished the poll it is in.
  void Retire(std::shared_ptr<const void> object);
  struct Retired {
    std::shared_ptr<const void> table;  // a flow table, member set or receive list
    std::vector<uint64_t> epochs;       // per worker; freeable once every worker has passed its own
  };
  std::vector<Retired> retired_;  // control thread only
  struct QsbrFree {
    void operator()(rte_rcu_qsbr* v) const;
  };
  std::unique_ptr<rte_rcu_qsbr, QsbrFree> qsbr_;  // workers are its threads (id = index)
};

}  // namespace qosvisor::vswitch
