// What qosgen writes about a run: the JSON document, CSV histograms, gnuplot plots (PNG and SVG),
// the progress line, and the side-by-side comparison of several runs.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "pktgen/ndr.h"

namespace qosvisor::app {

// A run's report out of a qosgen JSON document (or the report itself, if given one).
const nlohmann::json& ReportOf(const nlohmann::json& document);

Status WriteJsonFile(const std::string& path, const nlohmann::json& document);
Result<nlohmann::json> ReadJsonFile(const std::string& path);

// latency_ns.csv and completion_ns.csv (class, lower_ns, upper_ns, count: one row per non-empty
// histogram bucket) and throughput.csv (class, t_s, bps per 100 ms bin) in `dir`.
Status WriteCsv(const std::string& dir, const nlohmann::json& report);

// True when a gnuplot binary is on PATH.
bool GnuplotAvailable();

// slowdown, latency_cdf and throughput as .png and .svg in `dir`, drawn by gnuplot from data
// files and a script left next to them (so a plot can be redrawn or restyled by hand).
Status WritePlots(const std::string& dir, const nlohmann::json& report, const std::string& title);

// p99 (and p50) slowdown by message size for every class of every run, in one plot.
Status WriteComparePlot(const std::string& dir, const std::vector<nlohmann::json>& reports,
                        const std::vector<std::string>& names);

// The comparison table: per run and class, throughput, loss, p50/p99 slowdown by size bucket.
std::string FormatCompare(const std::vector<nlohmann::json>& reports,
                          const std::vector<std::string>& names);

// One progress line (no newline): elapsed/total, offered and received rate, loss so far
// (`receiving` false: a sink, where only what was sent is shown).
std::string FormatProgress(double elapsed_s, double total_s, double offered_bps,
                           double received_bps, uint64_t sent, uint64_t received,
                           bool receiving = true);

// NDR/PDR output: one line per trial, and the result.
std::string FormatNdrTrial(const pktgen::NdrTrial& trial, size_t index);
std::string FormatNdrResult(const pktgen::NdrResult& result, double loss);

}  // namespace qosvisor::app
