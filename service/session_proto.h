// The public view (gistmem.v1.Session) of a stored session record.
#pragma once

#include "gistmem/v1/gistmem.pb.h"
#include "store/store.h"

namespace gistmem::service {

v1::Session ToSessionProto(const store::SessionRecord& record);

}  // namespace gistmem::service
