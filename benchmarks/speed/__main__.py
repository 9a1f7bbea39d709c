"""`python -m benchmarks.speed`: the speed benchmark (`benchmarks.speed.main`)."""

from benchmarks.speed.main import main

if __name__ == "__main__":
    main()
