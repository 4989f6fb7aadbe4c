# The warm R parent: `Rscript parent.R CONFIG_JSON` (started by runtime/recipes/r/warm.py).
# It loads once what a cold R run loads before its recipe's first line and what most recipes
# touch first (jsonlite, the runtime's R framework, reticulate, Python inside R with numpy,
# pandas and platform_sdk), then forks one child per run: the child runs the same driver
# (driver.R) a cold Rscript runs, on the run's request. The socket, the fork and the child's
# process state are warm_parent.py's (Python, inside this R). Everything of the parent lives in
# this local() scope: a child's global environment is as empty as a fresh Rscript's.
local({
  args <- commandArgs(trailingOnly = TRUE)
  here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[[1]]))
  driver <- file.path(here, "driver.R")
  options(warn = 1)
  loaded <- character()
  for (name in c("jsonlite", "ml.runtime.r", "evaluators.r", "reticulate")) {
    loadNamespace(name)
    loaded <- c(loaded, name)
  }
  server_module <- reticulate::import_from_path("warm_parent", path = here)
  for (name in c("numpy", "pandas", "platform_sdk"))
    if (!inherits(try(reticulate::import(name), silent = TRUE), "try-error"))
      loaded <- c(loaded, paste0("python:", name))
  server <- server_module$Server(args[[1]])
  server$preloaded <- as.list(loaded)
  cat("[r-parent] ready: pid ", Sys.getpid(), "\n", sep = "")
  repeat {
    request <- server$next_run()
    if (is.null(request)) break
    flush(stdout())
    flush(stderr())
    pid <- server$fork()
    if (pid == 0L) {
      # The run's child: the driver, as `Rscript driver.R REQUEST` would run it, then out
      # through the server (R's own exit would run the parent's exit handlers).
      status <- 70L
      tryCatch({
        Sys.setenv(TZ = Sys.getenv("TZ"), MLRUNTIME_R_REQUEST = request$request)
        options(mlruntime.r.exit = function(code) {
          flush(stdout())
          flush(stderr())
          server$exit_child(as.integer(code))
        })
        source(driver, local = FALSE)
      }, error = function(e) cat("[r] the warm R child failed: ", conditionMessage(e), "\n",
                                 sep = ""),
      finally = {
        flush(stdout())
        flush(stderr())
        server$exit_child(status)
      })
    }
    server$forked(pid)
  }
  cat("[r-parent] retired: ", server$retiring, "\n", sep = "")
  quit(save = "no", status = 0L)
})
