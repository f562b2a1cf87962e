// Placement and rebalance plans as text: one line per move, its reason indented below.
#include "app/fleet_format.h"

#include <fmt/format.h>

namespace qosvisor::app {

using nlohmann::json;

namespace {

std::string Warnings(const json& reply) {
  std::string out;
  for (const json& w : reply.value("warnings", json::array())) {
    out += fmt::format("warning: {}\n", w.get<std::string>());
  }
  return out;
}

std::string FormatPlan(const json& plan, const std::string& state) {
  const json moves = plan.value("moves", json::array());
  if (moves.empty()) {
    return "nothing to do: every host is within its budget and its anti-affinity rules\n" +
           Warnings(plan);
  }
  std::string out =
      fmt::format("plan {} by {}: {} move{}{}\n", plan.value("plan", ""), plan.value("leader", ""),
                  moves.size(), moves.size() == 1 ? "" : "s", state);
  for (size_t i = 0; i < moves.size(); ++i) {
    const json& m = moves[i];
    out += fmt::format("{:>3}. {:<16} {} -> {}  {} changed pages, {:.0f} pages/s{}\n", i + 1,
                       m.value("vm", ""), m.value("from", ""), m.value("to", ""),
                       m.value("changed_pages", 0ull), m.value("pages_per_second", 0.0),
                       m.contains("state") ? ", " + m.value("state", "") : "");
    out += fmt::format("     {}\n", m.value("reason", ""));
  }
  return out + Warnings(plan);
}

}  // namespace

std::string FormatPlacement(const std::string& command, const json& reply) {
  if (command == "place") {
    return fmt::format("{}: {} -> {}\n  {}\n", reply.value("vm", ""), reply.value("from", ""),
                       reply.value("to", ""), reply.value("reason", "")) +
           Warnings(reply);
  }
  if (reply.contains("job") && !reply.contains("state")) {  // --no-wait
    return fmt::format("job {}\n", reply["job"].dump());
  }
  // A finished job carries the plan it ran as its result.
  if (reply.contains("result") && reply["result"].is_object()) {
    return FormatPlan(reply["result"], ", done");
  }
  return FormatPlan(reply, reply.value("dry_run", false) ? " (dry run: nothing moved)" : "");
}

}  // namespace qosvisor::app
