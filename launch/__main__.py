from launch.cli import run

run()
