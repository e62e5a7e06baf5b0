# Two MPI ranks on two "hosts" (network namespaces joined by a veth pair, made by
# scripts/two_host_mpirun.sh), so the ranks' traffic crosses a network interface over TCP as
# between two machines. Making namespaces needs root; where it cannot, the script exits 77 and
# ctest reports the test as skipped.
add_executable(two_host_probe ${CMAKE_CURRENT_SOURCE_DIR}/mpi_probe/two_host_probe.cpp)
target_link_libraries(two_host_probe PRIVATE MPI::MPI_C)
# The C API only, as for libmoe (see the top-level CMakeLists.txt).
target_compile_definitions(two_host_probe PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)

# --expect-bytes 1048576: the probe's allreduce moves its 1 MiB each way between the two ranks,
# so less than that on the veth means the bytes went some other way.
# --timeout 90: the script stops a hung job and removes the namespaces itself, before ctest's
# TIMEOUT (120) would kill it outright and leave them behind.
# RUN_SERIAL: two MPI jobs at once on a 2-core machine make both slow.
add_test(NAME mpi.two_host_smoke
         COMMAND ${PROJECT_SOURCE_DIR}/scripts/two_host_mpirun.sh --timeout 90
                 --expect-bytes 1048576 -- $<TARGET_FILE:two_host_probe> --distinct-hosts)
set_tests_properties(mpi.two_host_smoke PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 RUN_SERIAL TRUE)
if(MPIEXEC_EXECUTABLE)
  # The launcher of the MPI found by find_package(MPI), which the probe is linked against.
  set_tests_properties(mpi.two_host_smoke PROPERTIES ENVIRONMENT "MPIRUN=${MPIEXEC_EXECUTABLE}")
endif()

# The language recipe trained for 5 steps by 2 ranks on the two hosts: the expert all-to-all
# and the gradient sums cross the veth over TCP (about 11.6 MB per rank per step, so
# --expect-bytes 20000000 holds for 5 steps with room to spare).
add_test(NAME mpi.two_host_train
         COMMAND ${PROJECT_SOURCE_DIR}/scripts/two_host_mpirun.sh --timeout 240
                 --expect-bytes 20000000 -- $<TARGET_FILE:moe_cli> train
                 ${PROJECT_SOURCE_DIR}/recipes/lm/moe_fortunes.json
                 --set train.steps=5 --set train.log_every=1 --set train.eval_every=0
                 --set train.threads=1 --set train.tensorboard=false --overwrite
                 --set "out_dir=\"${CMAKE_BINARY_DIR}/two_host_train\"")
set_tests_properties(mpi.two_host_train PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 RUN_SERIAL TRUE)
if(MPIEXEC_EXECUTABLE)
  set_tests_properties(mpi.two_host_train PROPERTIES ENVIRONMENT "MPIRUN=${MPIEXEC_EXECUTABLE}")
endif()
