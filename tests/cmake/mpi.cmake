# Tests that run on several processes: every tests/mpi/test_*.cpp is one GoogleTest program
# (with the main() of tests/mpi/mpi_test_main.cpp) run under mpirun on 2 and on 4 ranks of
# this machine, as ctest tests mpi.<name>.np2 and mpi.<name>.np4.
#
# MOE_MPIEXEC and MOE_MPIRUN_FLAGS are the launcher and its flags for any test that starts
# an MPI job; moe_add_mpi_test(name exe) registers the two variants for an executable.

set(MOE_MPIEXEC ${MPIEXEC_EXECUTABLE})
# --allow-run-as-root: OpenMPI refuses to start as root without it (containers and CI run
#   as root); for other users it is accepted and ignored.
# --oversubscribe: the np4 variant needs 4 processes on machines with fewer cores (2 here);
#   OpenMPI then also yields the CPU while it waits instead of spinning.
# Nothing else was needed on this machine (OpenMPI 4.1.4, shared-memory transport "vader"
# with its default single-copy mechanism works as is).
set(MOE_MPIRUN_FLAGS --allow-run-as-root --oversubscribe)

function(moe_add_mpi_test name exe)
  foreach(np 2 4)
    add_test(NAME mpi.${name}.np${np}
             COMMAND ${MOE_MPIEXEC} ${MOE_MPIRUN_FLAGS} ${MPIEXEC_NUMPROC_FLAG} ${np}
                     $<TARGET_FILE:${exe}>)
    set_tests_properties(mpi.${name}.np${np} PROPERTIES
      TIMEOUT 300 FIXTURES_REQUIRED torch_fixtures)
  endforeach()
endfunction()

add_library(moe_mpi_test_main STATIC ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_test_main.cpp)
target_include_directories(moe_mpi_test_main PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/mpi)
target_link_libraries(moe_mpi_test_main PUBLIC moe_test_support GTest::gtest MPI::MPI_C)

file(GLOB MPI_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test_*.cpp)
foreach(src ${MPI_TEST_SOURCES})
  get_filename_component(stem ${src} NAME_WE)     # test_comm
  string(REGEX REPLACE "^test_" "" name ${stem})  # comm
  add_executable(mpi_${stem} ${src})
  target_link_libraries(mpi_${stem} PRIVATE moe_mpi_test_main)
  moe_add_mpi_test(${name} mpi_${stem})
endforeach()
