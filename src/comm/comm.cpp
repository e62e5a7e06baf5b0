// Choosing the process group: MPI when mpirun started us, one process otherwise.
#include <cstdlib>

#include "comm/comm.h"

namespace moe::comm {

// OpenMPI's launcher sets OMPI_COMM_WORLD_SIZE (and _RANK) in every process it starts; a
// plain `./moe train` has neither, and then no MPI library call is ever made.
bool launched_by_mpirun() {
    return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
}

std::unique_ptr<Comm> make_world_comm() {
    return launched_by_mpirun() ? make_mpi_comm() : make_single_process_comm();
}

}  // namespace moe::comm
