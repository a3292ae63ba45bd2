from flowstore.cli import main

main()
