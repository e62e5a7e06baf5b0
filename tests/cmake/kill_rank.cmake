# A rank that dies mid-training must end the whole job, with a message, within 60 seconds
# instead of leaving the other ranks blocked in a collective. The script starts `moe train`
# under mpirun, waits for 3 training steps, kills the last rank with SIGKILL and checks that
# mpirun exits non-zero within --deadline (60 s), names the dead rank, and leaves no rank
# running (seen here: about 2 s, OpenMPI's SIGTERM then, 1 s later, SIGKILL to the survivors).
#
# This file is included before mpi.cmake (alphabetical order), so MOE_MPIEXEC and
# MOE_MPIRUN_FLAGS are not set yet: the launcher of find_package(MPI) is used directly and
# the flags are the same two that mpi.cmake explains.
# RUN_SERIAL: two MPI jobs at once on a 2-core machine make both slow.
if(MPIEXEC_EXECUTABLE)
  foreach(np 2 4)
    add_test(NAME mpi.kill_rank.np${np}
             COMMAND python3 ${PROJECT_SOURCE_DIR}/scripts/kill_rank_check.py
                     --moe $<TARGET_FILE:moe_cli> --ranks ${np} --deadline 60
                     --out ${CMAKE_BINARY_DIR}/kill_rank_np${np}
                     --mpirun ${MPIEXEC_EXECUTABLE}
                     "--mpirun-flags=--allow-run-as-root --oversubscribe")
    set_tests_properties(mpi.kill_rank.np${np} PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)
  endforeach()
endif()
