// A fork parent's frozen image, moved ahead of the children that use it (pre-migration): later,
// a child migrating to a host that holds the image sends only the pages it wrote itself, and
// the destination maps the image as the child's copy-on-write base.
//
// An image travels as the data pages of its file (holes and zero pages read as zeros at the far
// end and are never sent) in kMemoryPages frames, then kComplete. Its checksum covers exactly
// what a guest would read: SHA-256 over each non-zero page's number and bytes, so a sparse copy
// and a zero-filled one of the same image agree.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "hv/migration_stream.h"

namespace qosvisor::hv {

// The checksum of [0, size) of `fd` as lower-case hex (64 characters).
Result<std::string> ImageChecksum(int fd, uint64_t size);

struct ImageSendResult {
  uint64_t bytes_sent = 0;  // framing included
  uint64_t pages_sent = 0;
};

// Sends the image's non-zero pages, paced to `bandwidth_bps` (0: as fast as the link takes
// them), then kComplete. `progress` gets the bytes sent so far.
Result<ImageSendResult> SendImage(int fd, uint64_t size, MigrationChannel& channel,
                                  uint64_t bandwidth_bps,
                                  std::chrono::milliseconds message_timeout,
                                  const std::function<void(uint64_t)>& progress);

// Writes what arrives into `out_fd` (already `size` bytes long, all holes) until kComplete; a
// page outside the image or any other frame is an error naming it.
Status ReceiveImage(MigrationChannel& channel, int out_fd, uint64_t size,
                    std::chrono::milliseconds message_timeout);

// An image id as Fork() makes them (16 hex digits): only such a name becomes a file name.
bool ValidImageId(const std::string& id);

}  // namespace qosvisor::hv
