from detector.cli import program

program()
